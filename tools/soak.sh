#!/usr/bin/env bash
# A long accelerated run of `edge-cli run` on the simulated harbor camera (10,000 frames by
# default: 2.8 hours of scene time, six staged anomalies, camera FFCs), printing the health
# records' RSS, open descriptors and latency over time. docs/on-device.md has the figures.
#
# Usage: tools/soak.sh [FRAMES] [OUT_DIR]     (run from the repository root after
#        cargo build --release)
set -euo pipefail
frames="${1:-10000}"
out="${2:-$(mktemp -d)}"
bin="${EDGE_CLI:-${CARGO_TARGET_DIR:-target}/release/edge-cli}"
mkdir -p "$out"
cat > "$out/site.toml" <<TOML
site = "soak"
camera = "cam"
data_dir = "$out/data"
[source]
kind = "simulator"
frames = $frames
lead_in = 600
anomalies = ["truck-on-quay", "car-reversing", "restricted-zone", "running", "jumping", "truck-on-quay"]
[sampling]
speed = 0.0
[health]
every_s = 30.0
[display]
png = "status.png"
every_s = 10.0
TOML
/usr/bin/time -v "$bin" run --config "$out/site.toml" --json > "$out/alerts.jsonl" 2> "$out/stderr.log"
python3 - "$out/alerts.jsonl" <<'PY'
import json, sys
print("uptime_s frames_in scored alerts rss_kib open_fds p50_ms p99_ms")
for line in open(sys.argv[1]):
    a = json.loads(line)
    if a["kind"] != "health":
        continue
    d = a["detail"]; c = d["counters"]
    print(round(d["uptime_s"]), c["frames_in"], c["scored"], c["alerts"], d["rss_kib"],
          d["open_fds"], d["latency_p50_ms"], d["latency_p99_ms"])
PY
grep -E "Maximum resident|Elapsed" "$out/stderr.log"
echo "output in $out"
