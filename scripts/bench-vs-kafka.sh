#!/usr/bin/env bash
# Apache Kafka and Sluice side by side: the same sluice-bench workloads with
# the same client settings against each, interleaved (Kafka, Sluice, Kafka,
# Sluice, ...) so a machine that drifts drifts for both, each on a fresh
# broker. See docs/BENCHMARKS.md.
#
#   scripts/bench-vs-kafka.sh [--mode single|rf3] [--rounds N] [--duration S]
#                             [--perf-records N] [--no-perf] [--sluice-cores N]
#                             [--work-dir DIR] [--min-free-gb N]
#
# --mode single   one broker each; workloads/vs-kafka-1kb.yaml with acks=all
# --mode rf3      three brokers each (every one a controller voter);
#                 workloads/vs-kafka-1kb-rf3.yaml with acks=1 and acks=all
# --rounds        rounds of each phase (default 3)
# --duration      seconds measured per point, passed to sluice-bench
#                 (default: the workload's 60 s); 5 makes a smoke run
# --perf-records  records for Kafka's producer/consumer perf tools (default
#                 2000000); --no-perf skips them
# --sluice-cores  shards of the single Sluice broker (default: all CPUs)
# --work-dir      where the brokers keep their data (default: a new folder in
#                 /tmp), wiped after each broker stops
# --min-free-gb   refuse to start a broker with less free disk than this
#                 there (default 40): a max-rate run writes tens of GB
#
# Phase 1, max: each round, Kafka then Sluice run the workload with
# producerRate 0 (sustained maximum search). Phase 2, fixed: each round, each
# broker runs it at 25%, 50% and 75% of Kafka's median maximum, then Kafka's
# ProducerPerformance and ConsumerPerformance run against it. Every run passes
# --broker-pid, so CPU per GB and peak RSS are the brokers'.
# Results: results/vs-kafka/<UTC timestamp>-<mode>/ (env.txt, manifest.tsv,
# runs/, compare/, perf/, logs/, summary.md, summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=single rounds=3 duration="" perf_records=2000000 perf=1 sluice_cores=""
work_parent=${TMPDIR:-/tmp} min_free_gb=40
while [[ $# -gt 0 ]]; do
  case $1 in
    --mode) mode=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --perf-records) perf_records=$2; shift 2 ;;
    --no-perf) perf=0; shift ;;
    --sluice-cores) sluice_cores=$2; shift 2 ;;
    --work-dir) work_parent=$2; shift 2 ;;
    --min-free-gb) min_free_gb=$2; shift 2 ;;
    *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
case $mode in
  single) brokers=1 base=workloads/vs-kafka-1kb.yaml cases=(acks-all) ;;
  rf3) brokers=3 base=workloads/vs-kafka-1kb-rf3.yaml cases=(acks-1 acks-all) ;;
  *) echo "--mode single|rf3" >&2; exit 2 ;;
esac
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: a positive integer" >&2; exit 2; }
if grep -q '^sweep:' "$base"; then
  echo "$base has a sweep: the script appends its own" >&2
  exit 2
fi
fractions=(0.25 0.5 0.75)

cargo build --release -q -p sluice-harness -p sluice-engine
bin=${CARGO_TARGET_DIR:-$root/target}/release
scripts/kafka.sh fetch >/dev/null

res=$root/results/vs-kafka/$(date -u +%Y-%m-%dT%H-%M-%SZ)-$mode
mkdir -p "$work_parent"
work=$(mktemp -d "$work_parent/bench-vs-kafka.XXXXXX")
mkdir -p "$res"/{workloads,runs,compare,perf,logs}
: >"$res/manifest.tsv"
running="" session="" pids="" bootstrap="" bootstrap_all=""

# --- environment -----------------------------------------------------------
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "mode: $mode, rounds: $rounds, duration: ${duration:-workload}, perf_records: $perf_records"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -srm)"
  echo "sluice commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "rustc: $(rustc --version)"
  echo "java: $(java -version 2>&1 | head -1)"
  echo "kafka: ${KAFKA_VERSION:-4.4.0} (Maven Central, scripts/kafka/pom.xml)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$res/env.txt"

# --- brokers ---------------------------------------------------------------
start_kafka() {
  scripts/kafka.sh start --brokers "$brokers" --dir "$work/kafka" >"$res/logs/$1.start.log" 2>&1 ||
    { cat "$res/logs/$1.start.log" >&2; return 1; }
  pids=$(sed -n 's/^pids: //p' "$res/logs/$1.start.log")
  bootstrap_all=$(sed -n 's/^kafka ready: bootstrap.servers=//p' "$res/logs/$1.start.log")
}

stop_kafka() {
  scripts/kafka.sh stop --dir "$work/kafka" >/dev/null
  local i
  for i in $(seq "$brokers"); do
    cp "$work/kafka/node-$i/logs/server.log" "$res/logs/$1.kafka-node-$i.log" 2>/dev/null || true
    rm -rf "$work/kafka/node-$i/data"
  done
}

# Sluice's brokers on 29092.. (controllers on 29192..), as `sluice cluster`
# lays them out: in rf3 mode one shard each, pinned round-robin over the CPUs.
start_sluice() {
  local i voters="" args list=() ncpu
  ncpu=$(nproc)
  rm -rf "$work/sluice"
  for i in $(seq "$brokers"); do voters+="${voters:+,}$i@127.0.0.1:$((29192 + i - 1))"; done
  bootstrap_all=""
  for i in $(seq "$brokers"); do
    args=(--listen "127.0.0.1:$((29092 + i - 1))" --data-dir "$work/sluice/broker-$i"
      --override group.initial.rebalance.delay.ms=0
      --override log.retention.check.interval.ms=30000)
    if ((brokers > 1)); then
      args+=(--cores 1 --cpus $(((i - 1) % ncpu)) --override node.id="$i"
        --override controller.quorum.voters="$voters")
    elif [[ -n $sluice_cores ]]; then
      args+=(--cores "$sluice_cores")
    fi
    echo "sluice ${args[*]}" >>"$res/logs/$1.start.log"
    SLUICE_LOG=warn setsid "$bin/sluice" "${args[@]}" >"$res/logs/$1.sluice-$i.log" 2>&1 </dev/null &
    list+=($!)
    bootstrap_all+="${bootstrap_all:+,}127.0.0.1:$((29092 + i - 1))"
  done
  pids=$(IFS=,; echo "${list[*]}")
  for i in $(seq "$brokers"); do
    python3 scripts/kafka/probe.py "127.0.0.1:$((29092 + i - 1))" --brokers "$brokers" --timeout 60 ||
      { stop_sluice; return 1; }
  done
}

stop_sluice() {
  local p
  for p in ${pids//,/ }; do kill -TERM "$p" 2>/dev/null || true; done
  for p in ${pids//,/ }; do
    timeout 60 tail --pid="$p" -f /dev/null || kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$work/sluice"
}

start_broker() { # kafka|sluice TAG
  echo "== $(date -u +%T) start $1 ($brokers broker(s)) for $2"
  local free_gb
  free_gb=$(df -P --block-size=1G "$work" | awk 'NR == 2 {print $4}')
  if ((free_gb < min_free_gb)); then
    echo "only $free_gb GB free under $work_parent (--min-free-gb $min_free_gb): stopping" >&2
    exit 1
  fi
  running=$1 session=$2
  "start_$1" "$2"
  bootstrap=${bootstrap_all%%,*}
  echo "   bootstrap $bootstrap_all, pids $pids"
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

# --- workloads ---------------------------------------------------------------
# The base workload with a sweep appended: one value of acks, and for the
# fixed phase the rates. sluice-bench records the file as run.
acks_of() { echo "${1#acks-}"; }
write_workload() { # CASE PHASE [RATE...]
  local f=$res/workloads/$1-$2.yaml
  {
    cat "$base"
    echo
    echo "# Appended by bench-vs-kafka.sh."
    echo "sweep:"
    echo "  producer.acks: [\"$(acks_of "$1")\"]"
    if [[ $# -gt 2 ]]; then
      shift 2
      echo "  producerRate: [$(IFS=,; echo "$*" | sed 's/,/, /g')]"
    fi
  } >"$f"
  echo "$f"
}

bench() { # PHASE CASE BROKER ROUND
  local tag=$1-$2-$3-r$4 dir
  local args=(run "$res/workloads/$2-$1.yaml" --bootstrap "$bootstrap" --broker-pid "$pids"
    --out "$res/runs/$tag")
  [[ -n $duration ]] && args+=(--duration "$duration")
  echo "   $(date -u +%T) sluice-bench ${args[*]}"
  if ! "$bin/sluice-bench" "${args[@]}" >"$res/logs/$tag.bench.log" 2>&1; then
    echo "   FAILED, see $res/logs/$tag.bench.log:" >&2
    tail -5 "$res/logs/$tag.bench.log" >&2
    brokers_alive "$tag"
    return 0
  fi
  dir=$(sed -n 's/^results: //p' "$res/logs/$tag.bench.log")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$dir" >>"$res/manifest.tsv"
  grep -E 'max_rate|msg/s|p99|sustain|CPU' "$res/logs/$tag.bench.log" | head -8 | sed 's/^/     /' || true
  brokers_alive "$tag"
}

# A broker that died mid-run spoils every later figure of its session: say
# so loudly, with the reason from its log.
brokers_alive() {
  local p
  for p in ${pids//,/ }; do
    kill -0 "$p" 2>/dev/null && continue
    echo "   BROKER $p ($running) EXITED during $1; its log:" >&2
    grep -h -E 'ERROR|FATAL' "$res/logs/$session".sluice-*.log "$work"/kafka/node-*/logs/server.log 2>/dev/null |
      tail -3 >&2 || true
  done
}

# CPU seconds (user + system) of the brokers so far, summed.
broker_cpu_s() {
  local p t=0 hz
  hz=$(getconf CLK_TCK)
  for p in ${pids//,/ }; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  awk -v t="$t" -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}'
}

# Kafka's own perf tools as an outside client: ProducerPerformance with the
# workload's producer settings, then ConsumerPerformance reading it all back.
perf_tools() { # BROKER ROUND CASE
  local topic=perf-$3-r$2 out=$res/perf/$1-$3-r$2 rf=$brokers c0 c1
  scripts/kafka.sh topics --bootstrap-server "$bootstrap_all" --create --topic "$topic" \
    --partitions 16 --replication-factor "$rf" \
    $( ((rf > 1)) && echo --config min.insync.replicas=2) >"$out-topic.txt" 2>&1 ||
    { echo "   topic creation failed: $(tail -2 "$out-topic.txt")" >&2; return 0; }
  c0=$(broker_cpu_s)
  scripts/kafka.sh producer-perf --topic "$topic" --num-records "$perf_records" --record-size 1024 \
    --throughput -1 --command-property bootstrap.servers="$bootstrap_all" acks="$(acks_of "$3")" \
    linger.ms=1 batch.size=131072 >"$out-producer.txt" 2>&1 || echo "   producer-perf failed" >&2
  c1=$(broker_cpu_s)
  echo "broker_cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')" >>"$out-producer.txt"
  scripts/kafka.sh consumer-perf --bootstrap-server "$bootstrap_all" --topic "$topic" \
    --num-records "$perf_records" --group "perf-$3-r$2" --timeout 60000 >"$out-consumer.txt" 2>&1 ||
    echo "   consumer-perf failed" >&2
  c0=$(broker_cpu_s)
  echo "broker_cpu_s=$(awk -v a="$c1" -v b="$c0" 'BEGIN {printf "%.2f", b - a}')" >>"$out-consumer.txt"
  echo "   perf $3: $(grep -E '99.9th' "$out-producer.txt" | tail -1)"
  echo "   perf $3: $(tail -2 "$out-consumer.txt" | head -1)"
}

# --- phase 1: sustained maximum ---------------------------------------------
for c in "${cases[@]}"; do write_workload "$c" max >/dev/null; done
for r in $(seq "$rounds"); do
  for b in kafka sluice; do
    start_broker "$b" "max-$b-r$r"
    if ((r == 1)); then
      scripts/kafka.sh api-versions --bootstrap-server "$bootstrap" >"$res/logs/api-versions-$b.txt" 2>&1 ||
        echo "   kafka-broker-api-versions failed against $b" >&2
    fi
    for c in "${cases[@]}"; do bench max "$c" "$b" "$r"; done
    stop_broker "max-$b-r$r"
  done
done

# --- phase 2: fixed rates, and Kafka's perf tools ---------------------------
for c in "${cases[@]}"; do
  mapfile -t rates < <(python3 scripts/kafka/summary.py rates "$res/manifest.tsv" "$c" "${fractions[@]}")
  ((${#rates[@]} == ${#fractions[@]})) || { echo "no sustained maximum for Kafka, case $c: no fixed rates" >&2; exit 1; }
  echo "== $c: fixed rates ${rates[*]} msg/s (${fractions[*]} of Kafka's median maximum)"
  write_workload "$c" fixed "${rates[@]}" >/dev/null
done
for r in $(seq "$rounds"); do
  for b in kafka sluice; do
    start_broker "$b" "fixed-$b-r$r"
    for c in "${cases[@]}"; do bench fixed "$c" "$b" "$r"; done
    if ((perf)); then
      for c in "${cases[@]}"; do perf_tools "$b" "$r" "$c"; done
    fi
    stop_broker "fixed-$b-r$r"
  done
done

# --- comparison ----------------------------------------------------------------
run_of() { awk -F'\t' -v p="$1" -v c="$2" -v b="$3" -v r="$4" \
  '$1 == p && $2 == c && $3 == b && $4 == r {print $5}' "$res/manifest.tsv"; }
for phase in max fixed; do
  for c in "${cases[@]}"; do
    for r in $(seq "$rounds"); do
      k=$(run_of "$phase" "$c" kafka "$r") s=$(run_of "$phase" "$c" sluice "$r")
      [[ -n $k && -n $s ]] || continue
      "$bin/sluice-bench" compare "$k" "$s" --html "$res/compare/$phase-$c-r$r.html" \
        >"$res/compare/$phase-$c-r$r.txt" 2>&1 || true
    done
  done
done
echo "== summary (A = Kafka, B = Sluice in compare/)"
python3 scripts/kafka/summary.py report "$res"
echo "results: $res"
