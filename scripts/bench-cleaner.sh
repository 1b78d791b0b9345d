#!/usr/bin/env bash
# What a busy log cleaner costs produce latency (issue 23, "Speed"): the
# publish p99 of workloads/latency-fixed-rate.yaml (10k msg/s, 1 KiB,
# acks=all, 16 partitions) while the cleaner works on another, compacted
# topic must be at most 1.2x the p99 without that work, in the same run.
#
# Both modes run the same second load beside the measured one, a "churn"
# workload: 1 KiB records over a few thousand keys into a 2-partition topic
# with 1 MiB segments. In "busy" mode that topic is
# `cleanup.policy=compact` with `min.cleanable.dirty.ratio=0.01`, so every
# sealed segment makes its log due and the cleaners (one per shard) pass
# over it again and again; in "idle" mode it is `cleanup.policy=delete`,
# same bytes, no cleaning. The churn runs --lead seconds before the
# measured load starts, so the compacted topic holds many overwritten keys
# in many segments when it does. A fresh broker per session, interleaved:
# round 1 busy then idle, round 2 idle then busy, ...
#
#   scripts/bench-cleaner.sh [--rounds N] [--duration S] [--lead S]
#                            [--churn-rate MSGS] [--churn-keys N]
#                            [--cores N] [--work-dir DIR] [--min-free-gb N]
#                            [--bin DIR]
#
# --rounds      rounds (default 3)
# --duration    seconds measured by the fixed-rate workload (default: its
#               120 s; its warm-up is then at most a fifth of it)
# --lead        seconds the churn runs before the measured load (default 30)
# --churn-rate  churn messages per second (default 2000, 2 MB/s)
# --churn-keys  churn keys, uniform (default 50000: up to 50 MB of live
#               data, which every pass over the topic reads and rewrites)
# --cores       the broker's shards (default: every CPU)
# --work-dir    where the broker keeps its data (default: a new folder in
#               /tmp), wiped after each broker stops
# --min-free-gb refuse to start a broker with less free disk (default 8)
# --bin         take sluice and sluice-bench from DIR, built already,
#               instead of building this checkout (env.txt names DIR)
#
# The broker logs each cleaner pass ("cleaned log", with bytes and time),
# so the summary counts the passes over the churn topic, and the bytes they
# read, that ended inside each measured window: the proof that the cleaner
# was busy while the latency was measured. Every run passes --broker-pid;
# the load average is recorded before and after every measured run.
# Results: results/cleaner/<UTC timestamp>/ (env.txt, manifest.tsv,
# workloads/, runs/, logs/, summary.md, summary.json);
# scripts/cleaner-summary.py writes the summary again from such a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 duration="" lead=30 churn_rate=2000 churn_keys=50000 cores=""
work_parent=${TMPDIR:-/tmp} min_free_gb=8 bin=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --lead) lead=$2; shift 2 ;;
    --churn-rate) churn_rate=$2; shift 2 ;;
    --churn-keys) churn_keys=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --work-dir) work_parent=$2; shift 2 ;;
    --min-free-gb) min_free_gb=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
for v in rounds lead churn_rate churn_keys; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v//_/-}: a positive integer" >&2; exit 2; }
done
[[ -z $duration || $duration =~ ^[1-9][0-9]*$ ]] || { echo "--duration: a positive integer" >&2; exit 2; }
[[ -z $cores || $cores =~ ^[1-9][0-9]*$ ]] || { echo "--cores: a positive integer" >&2; exit 2; }

if [[ -z $bin ]]; then
  cargo build --release -q -p sluice-harness -p sluice-engine
  bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
[[ -x $bin/sluice && -x $bin/sluice-bench ]] || { echo "no sluice and sluice-bench in $bin" >&2; exit 2; }

res=$root/results/cleaner/$(date -u +%Y-%m-%dT%H-%M-%SZ)
mkdir -p "$work_parent"
work=$(mktemp -d "$work_parent/bench-cleaner.XXXXXX")
mkdir -p "$res"/{workloads,runs,logs}
: >"$res/manifest.tsv"
pid="" churn="" port=29092

# The measured load's length decides how long the churn must last: its
# lead, the measured run's warm-up (a fifth) and window, and a margin for
# the consumer groups to settle; the churn is interrupted once the measured
# run ends.
fixed_s=${duration:-150}
churn_s=$((lead + fixed_s * 2 + 120))

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "rounds: $rounds, duration: ${duration:-workload}, lead: ${lead}s, cores: ${cores:-all}"
  echo "churn: $churn_rate msg/s of 1 KiB over $churn_keys uniform keys, 2 partitions, segment.bytes 1 MiB"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -srm)"
  echo "sluice commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "binaries: $bin (sluice built $(date -u -r "$bin/sluice" +%FT%TZ))"
  echo "rustc: $(rustc --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$res/env.txt"

# The workloads as run: one repeat per round (the rounds are the repeats).
sed -e "s/^repeat:.*/repeat: 1/" workloads/latency-fixed-rate.yaml >"$res/workloads/fixed.yaml"
for mode in busy idle; do
  policy=$([[ $mode == busy ]] && echo compact || echo delete)
  cat >"$res/workloads/churn-$mode.yaml" <<EOF
# Overwrites of $churn_keys keys beside the measured load; cleanup.policy
# $policy. Produce only.
name: cleaner churn $mode
topics: 1
partitionsPerTopic: 2
messageSize: 1024
keyDistribution:
  type: uniform
  keys: $churn_keys
subscriptionsPerTopic: 0
producersPerTopic: 1
producerRate: $churn_rate
testDurationSeconds: $churn_s
warmupDurationSeconds: 1
producer:
  acks: 1
  linger.ms: 5
topic:
  cleanup.policy: $policy
  segment.bytes: 1048576
  min.cleanable.dirty.ratio: 0.01
repeat: 1
EOF
done
for w in fixed churn-busy churn-idle; do
  "$bin/sluice-bench" validate "$res/workloads/$w.yaml" >/dev/null ||
    { echo "$res/workloads/$w.yaml does not validate" >&2; exit 2; }
done

start_broker() { # TAG
  echo "== $(date -u +%T) start sluice for $1 (load $(cut -d' ' -f1-3 /proc/loadavg))"
  local free_gb
  free_gb=$(df -P --block-size=1G "$work" | awk 'NR == 2 {print $4}')
  if ((free_gb < min_free_gb)); then
    echo "only $free_gb GB free under $work_parent (--min-free-gb $min_free_gb): stopping" >&2
    exit 1
  fi
  rm -rf "$work/sluice"
  local args=(--listen "127.0.0.1:$port" --data-dir "$work/sluice"
    --override group.initial.rebalance.delay.ms=0
    --override log.cleaner.backoff.ms=1000)
  [[ -n $cores ]] && args+=(--cores "$cores")
  echo "sluice ${args[*]}" >"$res/logs/$1.start.log"
  SLUICE_LOG=warn,sluice_engine::cleaner=info setsid "$bin/sluice" "${args[@]}" \
    >"$res/logs/$1.sluice.log" 2>&1 </dev/null &
  pid=$!
  python3 scripts/kafka/probe.py "127.0.0.1:$port" --brokers 1 --timeout 60 || { stop_broker; exit 1; }
  echo "   pid $pid"
}

stop_churn() {
  [[ -n $churn ]] || return 0
  kill -INT "$churn" 2>/dev/null || true
  timeout 60 tail --pid="$churn" -f /dev/null || kill -KILL "$churn" 2>/dev/null || true
  wait "$churn" 2>/dev/null || true
  churn=""
}

stop_broker() {
  stop_churn
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$work/sluice"
}

cleanup() {
  stop_broker || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

session() { # MODE(busy|idle) ROUND
  local tag=$1-r$2 dir load0 t0 t1
  start_broker "$tag"
  echo "   $(date -u +%T) churn ($1) for ${lead}s ahead"
  "$bin/sluice-bench" run "$res/workloads/churn-$1.yaml" --bootstrap "127.0.0.1:$port" \
    --out "$res/runs/$tag-churn" >"$res/logs/$tag.churn.log" 2>&1 </dev/null &
  churn=$!
  sleep "$lead"
  kill -0 "$churn" 2>/dev/null || { echo "   CHURN ENDED EARLY, see $res/logs/$tag.churn.log" >&2; tail -5 "$res/logs/$tag.churn.log" >&2; }
  local args=(run "$res/workloads/fixed.yaml" --bootstrap "127.0.0.1:$port" --broker-pid "$pid"
    --out "$res/runs/$tag")
  [[ -n $duration ]] && args+=(--duration "$duration")
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date -u +%FT%T.%NZ)
  echo "   $(date -u +%T) sluice-bench ${args[*]}"
  if ! "$bin/sluice-bench" "${args[@]}" >"$res/logs/$tag.bench.log" 2>&1; then
    echo "   FAILED, see $res/logs/$tag.bench.log:" >&2
    tail -5 "$res/logs/$tag.bench.log" >&2
    stop_broker
    return 0
  fi
  t1=$(date -u +%FT%T.%NZ)
  kill -0 "$churn" 2>/dev/null || echo "   CHURN ENDED during $tag: its load was not there throughout" >&2
  kill -0 "$pid" 2>/dev/null || echo "   BROKER EXITED during $tag" >&2
  dir=$(sed -n 's/^results: //p' "$res/logs/$tag.bench.log")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$dir" "$load0" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$t0" "$t1" "$res/logs/$tag.sluice.log" >>"$res/manifest.tsv"
  echo "   cleaner passes logged in the window: $(python3 scripts/cleaner-summary.py --count \
    "$res/logs/$tag.sluice.log" "$t0" "$t1")"
  stop_broker
}

for r in $(seq "$rounds"); do
  if ((r % 2)); then order=(busy idle); else order=(idle busy); fi
  for m in "${order[@]}"; do
    session "$m" "$r"
  done
done

python3 scripts/cleaner-summary.py "$res"
echo "results: $res"
