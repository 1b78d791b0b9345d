#!/usr/bin/env bash
# End-to-end throughput of one broker shard (--cores 1) with librdkafka,
# next to iperf3 over loopback measured in the same round, plus the broker's
# resident memory and the cores the client and the broker used in each
# phase. Shared machines are noisy, so it runs several rounds, each
# an iperf3 measurement then a fresh broker, and reports every round's ratios
# and their medians.
# Usage: scripts/bench-e2e.sh [GIB] [ROUNDS]   (defaults 2 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-2}
rounds=${2:-3}
bytes=$((gib * 1024 * 1024 * 1024))
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --release -q -p sluice-engine --bin sluice --example throughput
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
port=19300
cleanup() { kill "${broker:-}" "${iperf:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The disk's sustained write rate: past the kernel's dirty-page limits a
# produce run is bounded by it, whatever the broker does.
disk_rate=$(dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1), $NF}')
rm -f "$work/dd"

for round in $(seq "$rounds"); do
  iperf3 -s -p 19301 -1 >/dev/null 2>&1 & iperf=$!
  sleep 0.5
  iperf_mb_s=$(iperf3 -c 127.0.0.1 -p 19301 -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6,1))')
  wait $iperf || true

  SLUICE_LOG=warn "$bin/sluice" --cores 1 --listen 127.0.0.1:$port --data-dir "$work/data" \
    --override num.partitions=1 --override message.max.bytes=2000000 & broker=$!
  sleep 1
  rss_start=$(awk '/VmRSS/ {print $2}' /proc/$broker/status)
  result=$(BROKER_PID=$broker "$bin/examples/throughput" 127.0.0.1:$port bench "$bytes")
  rss_end=$(awk '/VmRSS/ {print $2}' /proc/$broker/status)
  rss_peak=$(awk '/VmHWM/ {print $2}' /proc/$broker/status)
  kill -TERM $broker; wait $broker || true
  rm -rf "$work/data"
  echo "$result $iperf_mb_s $rss_start $rss_end $rss_peak" >> "$work/rounds"
done

python3 - "$work/rounds" "$gib" "$disk_rate" <<'PY'
import json, statistics, sys
rounds = []
for line in open(sys.argv[1]):
    head, _, tail = line.rpartition("}")
    r = json.loads(head + "}")
    iperf, rss_start, rss_end, rss_peak = tail.split()
    iperf = float(iperf)
    rounds.append({
        "iperf3_loopback_mb_s": iperf,
        "produce_mb_s": r["produce_mb_s"], "produce_vs_iperf3": round(r["produce_mb_s"] / iperf, 3),
        "consume_mb_s": r["consume_mb_s"], "consume_vs_iperf3": round(r["consume_mb_s"] / iperf, 3),
        # Cores (CPU seconds per second) used by the client and the broker.
        "produce_cores": r["produce_cores"], "consume_cores": r["consume_cores"],
        "broker_rss_kib": {"start": int(rss_start), "end": int(rss_end), "peak": int(rss_peak)},
    })
median = lambda k: round(statistics.median(r[k] for r in rounds), 3)
print(json.dumps({
    "data_gib": int(sys.argv[2]),
    "disk_sustained_write": sys.argv[3],
    "rounds": rounds,
    "median": {k: median(k) for k in
               ("iperf3_loopback_mb_s", "produce_mb_s", "produce_vs_iperf3",
                "consume_mb_s", "consume_vs_iperf3")},
    "broker_rss_peak_kib_max": max(r["broker_rss_kib"]["peak"] for r in rounds),
}, indent=2))
PY
