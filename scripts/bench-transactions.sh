#!/usr/bin/env bash
# Transactions on Sluice and Apache Kafka side by side (issue 22, "Speed"):
# workloads/transactions.yaml (transaction.messages 0, 100 and 1,000, each
# point's sustained maximum, read_committed consumers) and
# workloads/transactions-read-committed.yaml (a committed backlog drained by
# read_committed and read_uncommitted consumers), one broker each, a fresh
# broker per session, interleaved: round 1 Sluice then Kafka, round 2 Kafka
# then Sluice, round 3 Sluice then Kafka, ... See docs/TRANSACTIONS.md,
# "Figures (Sluice and Apache Kafka)".
#
#   scripts/bench-transactions.sh [--rounds N] [--duration S] [--warmup S]
#                                 [--backlog-gb G] [--work-dir DIR]
#                                 [--min-free-gb N]
#
# --rounds      rounds (default 3)
# --duration    seconds measured per point of the max-rate sweep (default:
#               the workload's 20 s)
# --warmup      seconds of warm-up before each measured run of that sweep
#               (default: the workload's 5 s)
# --backlog-gb  the backlog of the consumption comparison, 10^9 bytes
#               (default: the workload's)
# --work-dir    where the brokers keep their data (default: a new folder in
#               /tmp), wiped after each broker stops
# --min-free-gb refuse to start a broker with less free disk (default 8;
#               topics carry retention.bytes, so a run holds under 5 GB)
#
# Every run passes --broker-pid, so CPU per GB is the broker's and the
# client's apart. The load average is recorded before and after every run.
# Results: results/transactions/<UTC timestamp>/ (env.txt, manifest.tsv,
# runs/, logs/, summary.md, summary.json); scripts/transactions-summary.py
# writes the summary again from such a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 duration="" warmup="" backlog_gb="" work_parent=${TMPDIR:-/tmp} min_free_gb=8
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --backlog-gb) backlog_gb=$2; shift 2 ;;
    --work-dir) work_parent=$2; shift 2 ;;
    --min-free-gb) min_free_gb=$2; shift 2 ;;
    *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: a positive integer" >&2; exit 2; }

cargo build --release -q -p sluice-harness -p sluice-engine
bin=${CARGO_TARGET_DIR:-$root/target}/release
scripts/kafka.sh fetch >/dev/null

res=$root/results/transactions/$(date -u +%Y-%m-%dT%H-%M-%SZ)
mkdir -p "$work_parent"
work=$(mktemp -d "$work_parent/bench-transactions.XXXXXX")
mkdir -p "$res"/{workloads,runs,logs}
: >"$res/manifest.tsv"
running="" pids="" bootstrap=""

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "rounds: $rounds, duration: ${duration:-workload}, warmup: ${warmup:-workload}, backlog_gb: ${backlog_gb:-workload}"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -srm)"
  echo "sluice commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "rustc: $(rustc --version)"
  echo "java: $(java -version 2>&1 | head -1)"
  echo "kafka: ${KAFKA_VERSION:-4.4.0} (Maven Central, scripts/kafka/pom.xml)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$res/env.txt"

# The workloads as run: the files themselves, with the backlog size given.
# One repeat per round: the rounds are the repeats, interleaved.
sed -e "s/^repeat:.*/repeat: 1/" \
  ${warmup:+-e "s/^warmupDurationSeconds:.*/warmupDurationSeconds: $warmup/"} \
  workloads/transactions.yaml >"$res/workloads/max.yaml"
if [[ -n $backlog_gb ]]; then
  sed "s/^consumerBacklogSizeGB:.*/consumerBacklogSizeGB: $backlog_gb/" \
    workloads/transactions-read-committed.yaml >"$res/workloads/backlog.yaml"
else
  cp workloads/transactions-read-committed.yaml "$res/workloads/backlog.yaml"
fi
# The consumption comparison alternates its two isolation levels: each round
# starts with the other one than the round before.
sed 's/isolation.level: \[read_committed, read_uncommitted\]/isolation.level: [read_uncommitted, read_committed]/' \
  "$res/workloads/backlog.yaml" >"$res/workloads/backlog-ru-first.yaml"
grep -q 'isolation.level: \[read_uncommitted, read_committed\]' "$res/workloads/backlog-ru-first.yaml" ||
  { echo "workloads/transactions-read-committed.yaml: no isolation.level sweep to reorder" >&2; exit 2; }

start_kafka() {
  scripts/kafka.sh start --dir "$work/kafka" >"$res/logs/$1.start.log" 2>&1 ||
    { cat "$res/logs/$1.start.log" >&2; return 1; }
  pids=$(sed -n 's/^pids: //p' "$res/logs/$1.start.log")
  bootstrap=$(sed -n 's/^kafka ready: bootstrap.servers=//p' "$res/logs/$1.start.log")
}

stop_kafka() {
  scripts/kafka.sh stop --dir "$work/kafka" >/dev/null
  cp "$work/kafka/node-1/logs/server.log" "$res/logs/$1.kafka.log" 2>/dev/null || true
  rm -rf "$work/kafka/node-1/data"
}

# One Sluice broker as bench-vs-kafka.sh starts it (all CPUs).
start_sluice() {
  rm -rf "$work/sluice"
  local args=(--listen 127.0.0.1:29092 --data-dir "$work/sluice"
    --override group.initial.rebalance.delay.ms=0
    --override log.retention.check.interval.ms=30000)
  echo "sluice ${args[*]}" >>"$res/logs/$1.start.log"
  SLUICE_LOG=warn setsid "$bin/sluice" "${args[@]}" >"$res/logs/$1.sluice.log" 2>&1 </dev/null &
  pids=$!
  bootstrap=127.0.0.1:29092
  python3 scripts/kafka/probe.py "$bootstrap" --brokers 1 --timeout 60 || { stop_sluice; return 1; }
}

stop_sluice() {
  kill -TERM "$pids" 2>/dev/null || true
  timeout 60 tail --pid="$pids" -f /dev/null || kill -KILL "$pids" 2>/dev/null || true
  rm -rf "$work/sluice"
}

start_broker() { # kafka|sluice TAG
  echo "== $(date -u +%T) start $1 for $2 (load $(cut -d' ' -f1-3 /proc/loadavg))"
  local free_gb
  free_gb=$(df -P --block-size=1G "$work" | awk 'NR == 2 {print $4}')
  if ((free_gb < min_free_gb)); then
    echo "only $free_gb GB free under $work_parent (--min-free-gb $min_free_gb): stopping" >&2
    exit 1
  fi
  running=$1
  "start_$1" "$2"
  echo "   bootstrap $bootstrap, pid $pids"
}

stop_broker() {
  [[ -n $running ]] || return 0
  "stop_$running" "$1"
  running=""
}

cleanup() {
  stop_broker cleanup || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench() { # KIND(max|backlog) BROKER ROUND FILE
  local tag=$1-$2-r$3 dir load0
  local args=(run "$4" --bootstrap "$bootstrap" --broker-pid "$pids" --out "$res/runs/$tag")
  [[ $1 == max && -n $duration ]] && args+=(--duration "$duration")
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "   $(date -u +%T) sluice-bench ${args[*]}"
  if ! "$bin/sluice-bench" "${args[@]}" >"$res/logs/$tag.bench.log" 2>&1; then
    echo "   FAILED, see $res/logs/$tag.bench.log:" >&2
    tail -5 "$res/logs/$tag.bench.log" >&2
    return 0
  fi
  dir=$(sed -n 's/^results: //p' "$res/logs/$tag.bench.log")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$dir" "$load0" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$res/manifest.tsv"
  kill -0 "${pids%%,*}" 2>/dev/null || echo "   BROKER ($2) EXITED during $tag" >&2
}

for r in $(seq "$rounds"); do
  if ((r % 2)); then order=(sluice kafka); else order=(kafka sluice); fi
  if ((r % 2)); then backlog=$res/workloads/backlog.yaml; else backlog=$res/workloads/backlog-ru-first.yaml; fi
  for b in "${order[@]}"; do
    start_broker "$b" "$b-r$r"
    bench max "$b" "$r" "$res/workloads/max.yaml"
    bench backlog "$b" "$r" "$backlog"
    stop_broker "$b-r$r"
  done
done

python3 scripts/transactions-summary.py "$res"
echo "results: $res"
