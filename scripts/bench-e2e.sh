#!/usr/bin/env bash
# End-to-end throughput of one broker shard (--cores 1) with librdkafka,
# next to iperf3 over loopback measured in the same run, plus the broker's
# resident memory. Usage: scripts/bench-e2e.sh [GIB]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-2}
bytes=$((gib * 1024 * 1024 * 1024))
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --release -q -p sluice-engine --bin sluice --example throughput
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
port=19300
cleanup() { kill "${broker:-}" "${iperf:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

iperf3 -s -p 19301 -1 >/dev/null 2>&1 & iperf=$!
sleep 0.5
iperf_mb_s=$(iperf3 -c 127.0.0.1 -p 19301 -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6,1))')

# The disk's sustained write rate: past the kernel's dirty-page limits a
# produce run is bounded by it, whatever the broker does.
disk_rate=$(dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
rm -f "$work/dd"

SLUICE_LOG=warn "$bin/sluice" --cores 1 --listen 127.0.0.1:$port --data-dir "$work/data" \
  --override num.partitions=1 --override message.max.bytes=2000000 & broker=$!
sleep 1
rss_start=$(awk '/VmRSS/ {print $2}' /proc/$broker/status)
result=$("$bin/examples/throughput" 127.0.0.1:$port bench "$bytes")
rss_end=$(awk '/VmRSS/ {print $2}' /proc/$broker/status)
rss_peak=$(awk '/VmHWM/ {print $2}' /proc/$broker/status)
kill -TERM $broker; wait $broker || true
python3 - "$result" "$iperf_mb_s" "$rss_start" "$rss_end" "$rss_peak" "$gib" "$disk_rate" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); iperf = float(sys.argv[2])
print(json.dumps({
    "data_gib": int(sys.argv[6]),
    "disk_sustained_write": sys.argv[7],
    "iperf3_loopback_mb_s": iperf,
    "produce_mb_s": r["produce_mb_s"], "produce_vs_iperf3": round(r["produce_mb_s"] / iperf, 3),
    "consume_mb_s": r["consume_mb_s"], "consume_vs_iperf3": round(r["consume_mb_s"] / iperf, 3),
    "broker_rss_kib": {"start": int(sys.argv[3]), "end": int(sys.argv[4]), "peak": int(sys.argv[5])},
}, indent=2))
PY
