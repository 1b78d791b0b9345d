#!/usr/bin/env bash
# What scraping costs (issue 24, "Speed"): one Sluice broker with its
# metrics listener on and scraped every second by one scraper process, against the
# same broker without the listener, on the same sluice-bench workloads:
# workloads/latency-fixed-rate.yaml (10k msg/s, acks=all, publish and
# end-to-end p99 at a fixed rate) and workloads/1-topic-16-partitions-1kb-
# max-rate.yaml (the sustained maximum, and the throughput measured at it).
# A fresh broker per session, interleaved: round 1 on then off, round 2 off
# then on, ... See docs/OPERATIONS.md, "What metrics cost".
#
#   scripts/bench-metrics.sh [--rounds N] [--duration S] [--max-duration S]
#                            [--kinds fixed,max] [--cores N] [--work-dir DIR]
#                            [--min-free-gb N] [--idle-scraper]
#
# --rounds       rounds (default 3)
# --kinds        which workloads each session runs: fixed, max or both
#                (default fixed,max)
# --duration     seconds measured by the fixed-rate workload (default: its
#                120 s; its warm-up is then at most a fifth of it)
# --max-duration seconds measured by the max-rate workload (default: its
#                5 min; its search probes last a quarter of it, 3 to 10 s)
# --cores        the broker's shards (default: every CPU, as
#                bench-vs-kafka.sh runs it)
# --work-dir     where the broker keeps its data (default: a new folder in
#                /tmp), wiped after each broker stops
# --min-free-gb  refuse to start a broker with less free disk (default 8;
#                the max-rate topic carries retention.bytes)
# --idle-scraper run the scraper under SCHED_IDLE (`chrt --idle 0`): it
#                stands for a Prometheus server on another host, whose CPU
#                is not the broker's; on two shared cores a scraper at
#                normal priority takes turns with the broker and the load
#                generator. The broker's own share of a scrape (the gather,
#                the encoding, the 100 KB answer) is counted either way.
#
# "Off" is a broker without `metrics.listener`. The counting itself is not
# switchable (per-shard cells the data path always updates), so the figures
# show what the listener and a scrape a second cost on top of it.
# Every run passes --broker-pid, so CPU per GB is the broker's and the
# client's apart. The load average is recorded before and after every run,
# and the scrapes made (and failed) during it.
# Results: results/metrics/<UTC timestamp>/ (env.txt, manifest.tsv, runs/,
# logs/, summary.md, summary.json); scripts/metrics-summary.py writes the
# summary again from such a folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 duration="" max_duration="" kinds=fixed,max cores="" work_parent=${TMPDIR:-/tmp} min_free_gb=8
idle_scraper=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --max-duration) max_duration=$2; shift 2 ;;
    --kinds) kinds=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --work-dir) work_parent=$2; shift 2 ;;
    --min-free-gb) min_free_gb=$2; shift 2 ;;
    --idle-scraper) idle_scraper=1; shift ;;
    *) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "--rounds: a positive integer" >&2; exit 2; }
[[ -z $cores || $cores =~ ^[1-9][0-9]*$ ]] || { echo "--cores: a positive integer" >&2; exit 2; }
[[ $kinds =~ ^(fixed|max)(,(fixed|max))?$ ]] || { echo "--kinds: fixed, max or fixed,max" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is needed for the last scrape" >&2; exit 2; }

cargo build --release -q -p sluice-harness -p sluice-engine
bin=${CARGO_TARGET_DIR:-$root/target}/release

res=$root/results/metrics/$(date -u +%Y-%m-%dT%H-%M-%SZ)
mkdir -p "$work_parent"
work=$(mktemp -d "$work_parent/bench-metrics.XXXXXX")
mkdir -p "$res"/{workloads,runs,logs}
: >"$res/manifest.tsv"
pid="" scraper="" port=29092 metrics_port=29644

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "rounds: $rounds, kinds: $kinds, duration: ${duration:-workload}, max duration: ${max_duration:-workload}, cores: ${cores:-all}"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -srm)"
  echo "sluice commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "rustc: $(rustc --version)"
  echo "scrape: GET http://127.0.0.1:$metrics_port/metrics once a second from one python3 process (metrics on)${idle_scraper:+, under SCHED_IDLE}"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$res/env.txt"

# The workloads as run. One repeat per round: the rounds are the repeats,
# interleaved. The max-rate search writes every probe to one topic, so it
# carries a retention bound.
sed -e "s/^repeat:.*/repeat: 1/" workloads/latency-fixed-rate.yaml >"$res/workloads/fixed.yaml"
{
  grep -v '^repeat:' workloads/1-topic-16-partitions-1kb-max-rate.yaml
  echo "repeat: 1"
  echo "topic:"
  echo "  retention.bytes: 268435456"
  echo "  segment.bytes: 67108864"
} >"$res/workloads/max.yaml"
for w in fixed max; do
  "$bin/sluice-bench" validate "$res/workloads/$w.yaml" >/dev/null ||
    { echo "$res/workloads/$w.yaml does not validate" >&2; exit 2; }
done

# Scrapes once a second until killed; one line per scrape: time, HTTP
# status (000: no answer within 5 s), seconds taken. One process, as
# Prometheus is: a shell loop forking curl, date and sleep every second
# cost this two-core machine more CPU than the broker's scrape itself,
# and the clients felt that, not the listener.
scrape_loop() {
  local policy=()
  [[ -n $idle_scraper ]] && policy=(chrt --idle 0)
  # exec: the background job's PID is the scraper's own, so stopping the
  # session stops it (a child python outlived its session and went on
  # scraping the sessions after it).
  exec "${policy[@]}" python3 -u - "$metrics_port" <<'PY'
import http.client, sys, time
port = int(sys.argv[1])
while True:
    start = time.monotonic()
    status = "000"
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        answer.read()
        status = str(answer.status)
        conn.close()
    except OSError:
        pass
    took = time.monotonic() - start
    print("%s %s %.6f" % (time.strftime("%H:%M:%S", time.gmtime()), status, took))
    time.sleep(max(0.0, 1.0 - took))
PY
}

start_broker() { # on|off TAG
  echo "== $(date -u +%T) start sluice, metrics $1, for $2 (load $(cut -d' ' -f1-3 /proc/loadavg))"
  local free_gb
  free_gb=$(df -P --block-size=1G "$work" | awk 'NR == 2 {print $4}')
  if ((free_gb < min_free_gb)); then
    echo "only $free_gb GB free under $work_parent (--min-free-gb $min_free_gb): stopping" >&2
    exit 1
  fi
  rm -rf "$work/sluice"
  local args=(--listen "127.0.0.1:$port" --data-dir "$work/sluice"
    --override group.initial.rebalance.delay.ms=0
    --override log.retention.check.interval.ms=30000)
  [[ -n $cores ]] && args+=(--cores "$cores")
  [[ $1 == on ]] && args+=(--override "metrics.listener=127.0.0.1:$metrics_port")
  echo "sluice ${args[*]}" >"$res/logs/$2.start.log"
  SLUICE_LOG=warn setsid "$bin/sluice" "${args[@]}" >"$res/logs/$2.sluice.log" 2>&1 </dev/null &
  pid=$!
  python3 scripts/kafka/probe.py "127.0.0.1:$port" --brokers 1 --timeout 60 || { stop_broker "$2"; exit 1; }
  if [[ $1 == on ]]; then
    scrape_loop >"$res/logs/$2.scrapes.log" 2>&1 &
    scraper=$!
  fi
  echo "   pid $pid${scraper:+, scraper $scraper}"
}

stop_broker() { # TAG
  if [[ -n $scraper ]]; then
    curl -s --max-time 5 "http://127.0.0.1:$metrics_port/metrics" >"$res/logs/$1.last-scrape.txt" || true
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
    scraper=""
  fi
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  pid=""
  rm -rf "$work/sluice"
}

cleanup() {
  stop_broker cleanup || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench() { # KIND(fixed|max) MODE(on|off) ROUND
  local tag=$1-$2-r$3 dir load0 scrapes0 scrapes=0 failed=0 log
  local args=(run "$res/workloads/$1.yaml" --bootstrap "127.0.0.1:$port" --broker-pid "$pid"
    --out "$res/runs/$tag")
  [[ $1 == fixed && -n $duration ]] && args+=(--duration "$duration")
  [[ $1 == max && -n $max_duration ]] && args+=(--duration "$max_duration")
  log=$res/logs/$2-r$3.scrapes.log
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  scrapes0=$([[ -f $log ]] && wc -l <"$log" || echo 0)
  echo "   $(date -u +%T) sluice-bench ${args[*]}"
  if ! "$bin/sluice-bench" "${args[@]}" >"$res/logs/$tag.bench.log" 2>&1; then
    echo "   FAILED, see $res/logs/$tag.bench.log:" >&2
    tail -5 "$res/logs/$tag.bench.log" >&2
    return 0
  fi
  if [[ -f $log ]]; then
    scrapes=$(tail -n +"$((scrapes0 + 1))" "$log" | wc -l)
    failed=$(tail -n +"$((scrapes0 + 1))" "$log" | awk '$2 != 200' | wc -l)
  fi
  dir=$(sed -n 's/^results: //p' "$res/logs/$tag.bench.log")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$dir" "$load0" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$scrapes" "$failed" >>"$res/manifest.tsv"
  echo "   scrapes during it: $scrapes ($failed failed)"
  kill -0 "$pid" 2>/dev/null || echo "   BROKER ($2) EXITED during $tag" >&2
}

for r in $(seq "$rounds"); do
  if ((r % 2)); then order=(on off); else order=(off on); fi
  for m in "${order[@]}"; do
    start_broker "$m" "$m-r$r"
    for k in ${kinds//,/ }; do
      bench "$k" "$m" "$r"
    done
    stop_broker "$m-r$r"
  done
done

python3 scripts/metrics-summary.py "$res"
echo "results: $res"
