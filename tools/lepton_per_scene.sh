#!/usr/bin/env bash
# Per-scene results on the real FLIR Lepton clips (../shared/data/thermal/cacophony-cptv): for each
# clip with enough empty frames, train the edge-s model on that clip's normal frames only, export
# the bundle, calibrate it on the same normal frames, and evaluate every labelled frame of the clip.
# Transductive by necessity (the cameras have no other footage): the normal frames scored were
# also trained on, so false-alarm figures are optimistic; the event frames were never seen.
#
#   tools/lepton_per_scene.sh   # 25 epochs (each clip has only 4–8 batches of normal frames): minutes per scene
#   EPOCHS=1 MAX_STEPS=2 CLIPS=cp_possum tools/lepton_per_scene.sh   # smoke run
#
# Writes $OUT/<clip>/{run,bundle,report} and prints a table of micro AUCs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$here/../shared/data/thermal/cacophony-cptv/cptv}
OUT=${OUT:-$here/lepton-runs}
EPOCHS=${EPOCHS:-25}
E=${EDGE_CLI:-$here/target/release/edge-cli}
# The four clips with the most normal frames (92–129: enough to train on and to fit a threshold)
# that also hold events; ftc_lepton_pourewa and gc_v2_wallaby (64 and 69) would qualify too.
CLIPS=${CLIPS:-"cp_possum api_small_trapcam02 ftc_lepton_hubble1 pc_v2-latlon_davidblake02"}
steps=()
if [ -n "${MAX_STEPS:-}" ]; then steps=(--max-steps "$MAX_STEPS"); fi
if [ ! -d "$DATA" ]; then
  echo "lepton_per_scene: $DATA not found (the shared real-data folder is absent)" >&2
  exit 1
fi
for c in $CLIPS; do
  clip="$DATA/$c.cptv"
  dir="$OUT/$c"
  echo "== $c"
  rm -rf "$dir"
  "$E" train --data "$clip" --preset edge-s --normalizer percentile --epochs "$EPOCHS" \
    --seed 7 --out "$dir/run" "${steps[@]}"
  "$E" export --checkpoint "$dir/run" --calib "$clip" --out "$dir/bundle" --name "lepton-$c" \
    --calib-windows 16 --refine-windows 2 --parity-windows 16
  "$E" calibrate --bundle "$dir/bundle" --source "$clip" --fps 9
  "$E" eval --bundle "$dir/bundle" --data "$clip" --out "$dir/report"
done
echo
printf '%-28s %8s %8s %10s %10s %8s %8s\n' clip frames events paper-AUC causal-AUC recall alarms
for c in $CLIPS; do
  python3 - "$OUT/$c/report/report.json" "$c" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = {x["protocol"]: x for x in r["protocols"]}
def f(v):
    return "-" if v is None else f"{v:.3f}"
c = p.get("causal", {})
ev = c.get("events") or {}
print(f'{sys.argv[2]:<28} {r["frames"]:>8} {p["paper"]["detection"]["anomalous_frames"]:>8} '
      f'{f(p["paper"]["detection"]["micro_auc"]):>10} {f(c.get("detection", {}).get("micro_auc")):>10} '
      f'{ev.get("detected", "-")}/{ev.get("labelled", "-"):<6} {ev.get("alarms", "-"):>8}')
PY
done
