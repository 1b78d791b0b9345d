#!/usr/bin/env bash
# One tenant at its quota against another tenant's latency (issue 25,
# "Quotas"): the publish p99 of a steady tenant must move by at most 20%
# when a greedy tenant on the same broker pushes as hard as it can and is
# held to its producer quota.
#
# The steady tenant is sluice-bench at a fixed, open-loop rate (1 KiB
# records, acks=all, 16 partitions; latency counts from each record's
# intended send time). The greedy tenant is Kafka's ProducerPerformance
# with client.id=greedy, --throughput -1 (unbounded), 1 KiB records,
# acks=1, into its own topic, under `producer_byte_rate` set with Kafka's
# kafka-configs.sh. sluice-bench's client id is not greedy, so the steady
# tenant has no quota. Modes: "alone" (the steady tenant only), "greedy"
# (both, on one broker) and "elsewhere" (both, the greedy tenant on a
# second broker process on the same host, under the same quota: what the
# greedy client costs the host alone, with no broker shared); a fresh
# broker per session, interleaved: round 1 in the order given, round 2
# reversed, ...
#
#   scripts/bench-quotas.sh [--rounds N] [--duration S] [--rate MSGS]
#                           [--quota BYTES] [--cores N] [--bin DIR]
#                           [--modes M,M...] [--idle-greedy]
#
# --rounds    rounds (default 3)
# --duration  seconds sluice-bench measures (default 60; its warm-up is a
#             fifth of that at most)
# --rate      the steady tenant's messages per second (default 2000)
# --quota     the greedy tenant's producer_byte_rate (default 1048576)
# --cores     the broker's shards (default: every CPU)
# --bin       take sluice and sluice-bench from DIR, built already,
#             instead of building this checkout
# --modes     which sessions each round runs (default greedy,alone)
# --idle-greedy  run the greedy client under SCHED_IDLE, so it takes only
#             CPU time nothing else on the host wants, as a client on
#             another machine would (the broker still serves all it sends)
#
# Results: results/quotas/<UTC timestamp>/ (env.txt, workloads/, runs/,
# logs/, summary.md, summary.json): each session's publish p50/p99 and the
# greedy tenant's rate as ProducerPerformance reports it (the proof that
# it ran at its quota while the p99 was measured).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 duration=60 rate=2000 quota=1048576 cores="" bin="" modes=greedy,alone idle=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --quota) quota=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --idle-greedy) idle=(chrt --idle 0); shift ;;
    *) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
for v in rounds duration rate quota; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--$v: a positive integer" >&2; exit 2; }
done
[[ -z $cores || $cores =~ ^[1-9][0-9]*$ ]] || { echo "--cores: a positive integer" >&2; exit 2; }
IFS=, read -r -a mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
  [[ $m =~ ^(alone|greedy|elsewhere)$ ]] || { echo "--modes: alone, greedy or elsewhere, not '$m'" >&2; exit 2; }
done

if [[ -z $bin ]]; then
  cargo build --release -q -p sluice-harness -p sluice-engine
  bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
[[ -x $bin/sluice && -x $bin/sluice-bench ]] || { echo "no sluice and sluice-bench in $bin" >&2; exit 2; }
scripts/kafka.sh fetch >/dev/null

res=$root/results/quotas/$(date -u +%Y-%m-%dT%H-%M-%SZ)
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-quotas.XXXXXX")
mkdir -p "$res"/{workloads,runs,logs}
pid="" other="" greedy="" port=29192
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "rounds: $rounds, modes: $modes, greedy client: ${idle[*]:-normal priority}, duration: ${duration}s, steady rate: $rate msg/s, greedy quota: $quota B/s, cores: ${cores:-all}"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc), memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "sluice commit: $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "binaries: $bin"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$res/env.txt"

sed -e "s/^producerRate:.*/producerRate: $rate/" -e "s/^repeat:.*/repeat: 1/" \
  -e "s/^name:.*/name: steady tenant at $rate msg\/s/" \
  workloads/latency-fixed-rate.yaml >"$res/workloads/steady.yaml"
"$bin/sluice-bench" validate "$res/workloads/steady.yaml" >/dev/null

stop_greedy() {
  [[ -n $greedy ]] || return 0
  kill -TERM "$greedy" 2>/dev/null || true
  timeout 30 tail --pid="$greedy" -f /dev/null || kill -KILL "$greedy" 2>/dev/null || true
  wait "$greedy" 2>/dev/null || true
  greedy=""
}

stop_process() { # PID
  kill -TERM "$1" 2>/dev/null || true
  timeout 60 tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true
}

stop_broker() {
  stop_greedy
  [[ -n $other ]] && stop_process "$other"
  [[ -n $pid ]] && stop_process "$pid"
  pid="" other=""
  rm -rf "$work/sluice" "$work/other"
}

start_broker() { # ADDRESS DATA_DIR LOG: sets $started
  local args=(--listen "$1" --data-dir "$2")
  [[ -n $cores ]] && args+=(--cores "$cores")
  SLUICE_LOG=warn setsid "$bin/sluice" "${args[@]}" >"$3" 2>&1 </dev/null &
  started=$!
  python3 scripts/kafka/probe.py "$1" --brokers 1 --timeout 60 || { stop_broker; exit 1; }
  scripts/kafka.sh run org.apache.kafka.tools.ConfigCommand --bootstrap-server "$1" --alter \
    --entity-type clients --entity-name greedy --add-config "producer_byte_rate=$quota" \
    >>"${3%.sluice.log}.configs.log" 2>&1
}
trap 'stop_broker || true; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

session() { # MODE(alone|greedy|elsewhere) ROUND
  local tag=$1-r$2 b="127.0.0.1:$port" g
  echo "== $(date -u +%T) $tag (load $(cut -d' ' -f1-3 /proc/loadavg))"
  start_broker "$b" "$work/sluice" "$res/logs/$tag.sluice.log"
  pid=$started
  g=$b
  if [[ $1 == elsewhere ]]; then
    g="127.0.0.1:$((port + 1))"
    start_broker "$g" "$work/other" "$res/logs/$tag.other.sluice.log"
    other=$started
  fi
  if [[ $1 != alone ]]; then
    scripts/kafka.sh topics --bootstrap-server "$g" --create --topic greedy --partitions 4 \
      >>"$res/logs/$tag.configs.log" 2>&1
    "${idle[@]}" scripts/kafka.sh producer-perf --topic greedy --num-records 1000000000 --record-size 1024 \
      --throughput -1 --reporting-interval 5000 \
      --producer-props "bootstrap.servers=$g" client.id=greedy acks=1 linger.ms=5 \
      >"$res/logs/$tag.greedy.log" 2>&1 </dev/null &
    greedy=$!
    sleep 15 # past the quota's first 10 s window, so it is throttled throughout
  fi
  "$bin/sluice-bench" run "$res/workloads/steady.yaml" --bootstrap "$b" --broker-pid "$pid" \
    --duration "$duration" --out "$res/runs/$tag" >"$res/logs/$tag.bench.log" 2>&1 ||
    { echo "   FAILED, see $res/logs/$tag.bench.log" >&2; tail -5 "$res/logs/$tag.bench.log" >&2; }
  sed -n 's/^results: //p' "$res/logs/$tag.bench.log" >"$res/runs/$tag.dir"
  stop_broker
}

for r in $(seq "$rounds"); do
  order=("${mode_list[@]}")
  if ((r % 2 == 0)); then
    for ((i = ${#mode_list[@]} - 1, j = 0; i >= 0; i--, j++)); do order[j]=${mode_list[i]}; done
  fi
  for m in "${order[@]}"; do session "$m" "$r"; done
done

python3 - "$res" "$quota" <<'PY'
import json, os, re, statistics, sys
res, quota = sys.argv[1], int(sys.argv[2])
rows = []
for name in sorted(os.listdir(os.path.join(res, "runs"))):
    if not name.endswith(".dir"):
        continue
    tag = name[:-4]
    mode, rnd = tag.rsplit("-r", 1)
    d = open(os.path.join(res, "runs", name)).read().strip()
    if not d:
        continue
    p = json.load(open(os.path.join(d, "run.json")))["points"][0]
    greedy_mb = None
    log = os.path.join(res, "logs", tag + ".greedy.log")
    if os.path.exists(log):
        # ProducerPerformance's interval lines: "N records sent, R records/sec (X MB/sec), ..."
        rates = [float(m) for m in re.findall(r"\(([\d.]+) MB/sec\)", open(log).read())]
        greedy_mb = statistics.median(rates[2:] or rates) if rates else None
    rows.append({"mode": mode, "round": int(rnd),
                 "publish_p50_ms": p["publish_latency"]["p50_us"] / 1e3,
                 "publish_p99_ms": p["publish_latency"]["p99_us"] / 1e3,
                 "publish_rate_msgs": p["publish_rate_msgs"],
                 "greedy_mb_per_s": greedy_mb})
modes = [m for m in ("alone", "greedy", "elsewhere") if any(r["mode"] == m for r in rows)]
med = {m: statistics.median([r["publish_p99_ms"] for r in rows if r["mode"] == m]) for m in modes}
def of_alone(m):
    return med[m] / med["alone"] if m in med and med.get("alone") else float("nan")
ratio = of_alone("greedy")
json.dump({"rows": rows, "p99_median_ms": med, "ratio": ratio, "elsewhere_ratio": of_alone("elsewhere"),
           "bar": 1.2, "quota_mb_per_s": quota / 1e6},
          open(os.path.join(res, "summary.json"), "w"), indent=1)
md = ["| mode | round | publish p50 ms | publish p99 ms | publish msg/s | greedy MB/s |",
      "| --- | --- | --- | --- | --- | --- |"]
for r in sorted(rows, key=lambda r: (r["round"], r["mode"])):
    g = "" if r["greedy_mb_per_s"] is None else f"{r['greedy_mb_per_s']:.2f}"
    md.append(f"| {r['mode']} | {r['round']} | {r['publish_p50_ms']:.2f} | {r['publish_p99_ms']:.2f} "
              f"| {r['publish_rate_msgs']:.0f} | {g} |")
md.append("")
md.append(f"Publish p99, greedy / alone: {ratio:.2f}x of the medians (bar: at most 1.2x); "
          f"greedy quota {quota / 1e6:.2f} MB/s.")
if "elsewhere" in med:
    md.append("")
    md.append(f"Publish p99, greedy tenant on another broker of this host / alone: "
              f"{of_alone('elsewhere'):.2f}x of the medians (what the host's sharing costs).")
open(os.path.join(res, "summary.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "results: $res"
