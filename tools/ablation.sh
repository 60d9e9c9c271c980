#!/usr/bin/env bash
# Ablation of the self-supervised block (docs/results.md): train the edge-s model with block
# `none`, `sspcab` and `paper` (SSMCTB) — same simulated footage, same seed, same schedule — then
# export, calibrate on the normal training clips and evaluate each on a held-out simulated test
# set whose seed was never used in training.
#
#   tools/ablation.sh                    # 3 epochs per variant: about 20 min each on 2 cores
#   EPOCHS=1 MAX_STEPS=2 tools/ablation.sh   # smoke run
#
# Environment: OUT (work folder, default ablation/), EPOCHS (3), EDGE_CLI (target/release/edge-cli).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$here/ablation}
EPOCHS=${EPOCHS:-3}
E=${EDGE_CLI:-$here/target/release/edge-cli}
steps=()
if [ -n "${MAX_STEPS:-}" ]; then steps=(--max-steps "$MAX_STEPS"); fi
mkdir -p "$OUT"
# Training footage (the demo model's) and a held-out test set with an unused seed.
[ -f "$OUT/train-data/manifest.json" ] ||
  "$E" simulate --out "$OUT/train-data" --train-clips 8 --test-clips 6 --seed 2024
[ -f "$OUT/heldout/manifest.json" ] ||
  "$E" simulate --out "$OUT/heldout" --train-clips 0 --test-clips 12 --seed 31337
last=$(printf 'epoch-%04d' "$EPOCHS")
for b in none sspcab paper; do
  run="$OUT/run-$b"
  if [ ! -f "$run/$last/model.safetensors" ]; then
    resume=()
    if [ -d "$run" ]; then resume=(--resume); fi
    "$E" train --data "$OUT/train-data" --preset edge-s --block "$b" --epochs "$EPOCHS" --seed 7 \
      --out "$run" "${steps[@]}" "${resume[@]}"
  fi
  "$E" export --checkpoint "$run" --calib "$OUT/train-data" --out "$OUT/bundle-$b" \
    --name "ablation-$b" --calib-windows 24 --refine-windows 2 --parity-windows 32
  "$E" calibrate --bundle "$OUT/bundle-$b" --source "$OUT/train-data"
  "$E" eval --bundle "$OUT/bundle-$b" --data "$OUT/heldout" --out "$OUT/report-$b"
done
echo
printf '%-8s %12s %12s %12s %12s %10s %10s\n' block paper-micro paper-macro causal-micro causal-macro recall false/h
for b in none sspcab paper; do
  python3 - "$OUT/report-$b/report.json" "$b" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = {x["protocol"]: x for x in r["protocols"]}
def f(v):
    return "-" if v is None else f"{v:.3f}"
c = p["causal"]
ev = c["events"]
print(f'{sys.argv[2]:<8} {f(p["paper"]["detection"]["micro_auc"]):>12} {f(p["paper"]["detection"]["macro_auc"]):>12} '
      f'{f(c["detection"]["micro_auc"]):>12} {f(c["detection"]["macro_auc"]):>12} '
      f'{ev["detected"]:>4}/{ev["labelled"]:<5} {ev["false_alarms_per_hour"]:>10.2f}')
PY
done
