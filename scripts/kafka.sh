#!/usr/bin/env bash
# Apache Kafka's own broker and tools, fetched from Maven Central, to run next
# to Sluice (scripts/bench-vs-kafka.sh) and against it
# (engine/tests/kafka_tools.rs; the differential tests, engine/tests/kafka_diff,
# use `fetch` too). Needs Java 17+ and Maven.
#
#   scripts/kafka.sh fetch                 jars into ~/.cache/sluice/kafka-<version>/lib
#                                          (reused when complete); prints the folder
#   scripts/kafka.sh start [--brokers 1|3] [--dir DIR] [--port PORT] [--heap SIZE]
#                                          fresh KRaft node(s), combined broker+controller,
#                                          on 127.0.0.1; waits until ready; prints the PIDs
#   scripts/kafka.sh stop [--dir DIR]      SIGTERM, then SIGKILL after 60 s
#   scripts/kafka.sh wait HOST:PORT [N]    until Metadata lists N brokers
#   scripts/kafka.sh producer-perf ARGS    org.apache.kafka.tools.ProducerPerformance
#   scripts/kafka.sh consumer-perf ARGS    org.apache.kafka.tools.ConsumerPerformance
#   scripts/kafka.sh api-versions ARGS     org.apache.kafka.tools.BrokerApiVersionsCommand
#   scripts/kafka.sh topics ARGS           org.apache.kafka.tools.TopicCommand
#   scripts/kafka.sh run CLASS ARGS        any main class on Kafka's class path
#   scripts/kafka.sh classes               the tool main classes in the jars
#
# Node i (1-based) is node.id i, clients on PORT+i-1 (default 19092),
# its controller on PORT+100+i-1; every node is a voter, so three nodes are a
# controller quorum of three. Data, logs and server.properties are in
# DIR/node-<i> (default /tmp/sluice-kafka), wiped on start.
# KAFKA_VERSION (default below) picks another 4.x release; JAVA another JVM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
JAVA=${JAVA:-java}
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}/kafka-$KAFKA_VERSION
lib=$cache/lib
# The JVM flags of Kafka's kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS).
jvm_perf=(-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true)

die() { echo "kafka.sh: $*" >&2; exit 2; }

fetch() {
  # A marker written last, so a download cut short is redone, not reused.
  if [[ -f $lib/.complete ]]; then
    echo "$lib"
    return
  fi
  command -v mvn >/dev/null || die "needs Maven (apt-get install maven)"
  rm -rf "$lib"
  mkdir -p "$lib"
  echo "kafka.sh: fetching Kafka $KAFKA_VERSION and its dependencies into $lib" >&2
  mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib" >&2
  [[ -f $lib/kafka_2.13-$KAFKA_VERSION.jar ]] || die "no kafka_2.13-$KAFKA_VERSION.jar in $lib"
  touch "$lib/.complete"
  echo "$lib"
}

# java with Kafka's class path; tools log warnings to stderr only.
run_class() {
  fetch >/dev/null
  # exec: the caller's PID is java's, so stopping it stops the tool.
  exec "$JAVA" -Xmx512m "${jvm_perf[@]}" -Dlog4j2.configurationFile="$here/kafka/log4j2-tools.properties" \
    -cp "$lib/*" "$@"
}

classes() {
  fetch >/dev/null
  for jar in "$lib"/kafka-tools-*.jar "$lib"/kafka_2.13-*.jar; do
    unzip -Z1 "$jar" | grep -E '(Performance|Command|Tool)\.class$|^kafka/Kafka\.class$' |
      sed 's/\.class$//; s#/#.#g' | sed "s#^#$(basename "$jar"): #"
  done
}

# server.properties of node $1 of $2. Kafka's defaults except what a
# loopback cluster of this size needs; printed by start.
properties() {
  local node=$1 nodes=$2 voters="" i rf
  for i in $(seq "$nodes"); do
    voters+="${voters:+,}$i@127.0.0.1:$((port + 100 + i - 1))"
  done
  rf=$((nodes < 3 ? 1 : 3))
  cat <<EOF
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((port + node - 1)),CONTROLLER://127.0.0.1:$((port + 100 + node - 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$((port + node - 1))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/node-$node/data
# Internal topics cannot have more replicas than there are brokers.
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$((rf < 2 ? 1 : 2))
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$((rf < 2 ? 1 : 2))
# As Kafka's shipped config/server.properties: no 3 s wait before a new
# group's first rebalance. The harness does not measure the rebalance, and
# the Sluice side gets the same value.
group.initial.rebalance.delay.ms=0
# The benchmarks check retention every 30 s on both brokers; the default
# (Kafka's and Sluice's) is 5 min, in which a
# max-rate run can fill the disk despite the workloads' retention.bytes.
log.retention.check.interval.ms=30000
EOF
}

start() {
  local brokers=1 heap=1g
  dir=/tmp/sluice-kafka
  port=19092
  while [[ $# -gt 0 ]]; do
    case $1 in
      --brokers) brokers=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --port) port=$2; shift 2 ;;
      --heap) heap=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ $brokers =~ ^[1-9]$ ]] || die "start: --brokers 1..9"
  if [[ -e $dir && ! -f $dir/.kafka-sh ]] && [[ -n $(ls -A "$dir") ]]; then
    die "start: $dir is not empty and was not made by kafka.sh; not wiping it"
  fi
  [[ -f $dir/.kafka-sh ]] && stop_dir "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  touch "$dir/.kafka-sh"
  fetch >/dev/null
  # Kafka 4.x brokers run on Java 17 or later.
  local java_major
  java_major=$("$JAVA" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p' || true)
  ((${java_major:-0} >= 17)) || die "start: Kafka $KAFKA_VERSION needs Java 17+, $JAVA is ${java_major:-unknown}"
  # A cluster id is 16 random bytes in unpadded base64url, as StorageTool's
  # random-uuid prints it; like Kafka's Uuid.randomUuid, never one starting
  # with '-', which the tool would take for an option.
  local cluster_id i node pids=() bootstrap=""
  cluster_id=$(python3 -c 'import base64,os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"):
        break
print(u)')
  echo "kafka $KAFKA_VERSION, $("$JAVA" -version 2>&1 | head -1), heap $heap, $brokers node(s), cluster id $cluster_id"
  for i in $(seq "$brokers"); do
    node=$dir/node-$i
    mkdir -p "$node/logs"
    properties "$i" "$brokers" >"$node/server.properties"
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$here/kafka/log4j2-tools.properties" -cp "$lib/*" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$node/server.properties" >"$node/format.log" 2>&1 ||
      { cat "$node/format.log" >&2; die "start: formatting node $i failed"; }
  done
  echo "--- server.properties of node 1 (others differ in node.id, ports, log.dirs)"
  grep -v '^#' "$dir/node-1/server.properties"
  echo "--- JVM: -Xmx$heap -Xms$heap ${jvm_perf[*]}"
  for i in $(seq "$brokers"); do
    node=$dir/node-$i
    # setsid: its own process group, so a Ctrl-C to the caller's group
    # reaches it only through stop.
    setsid "$JAVA" -Xmx"$heap" -Xms"$heap" "${jvm_perf[@]}" \
      -Dkafka.logs.dir="$node/logs" -Dlog4j2.configurationFile="$here/kafka/log4j2-broker.properties" \
      -cp "$lib/*" kafka.Kafka "$node/server.properties" >"$node/stdout.log" 2>&1 </dev/null &
    echo $! >"$node/pid"
    pids+=($!)
    bootstrap+="${bootstrap:+,}127.0.0.1:$((port + i - 1))"
  done
  for i in $(seq "$brokers"); do
    if ! python3 "$here/kafka/probe.py" "127.0.0.1:$((port + i - 1))" --brokers "$brokers" --timeout 120; then
      tail -20 "$dir/node-$i/logs/server.log" "$dir/node-$i/stdout.log" >&2 || true
      stop_dir "$dir"
      die "start: node $i not ready"
    fi
  done
  echo "kafka ready: bootstrap.servers=$bootstrap"
  echo "pids: $(IFS=,; echo "${pids[*]}")"
}

# SIGTERM every node of DIR (Kafka shuts down cleanly on it), SIGKILL
# whatever is left after 60 s.
stop_dir() {
  local d=$1 f pid waited
  for f in "$d"/node-*/pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$d"/node-*/pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 600)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

stop() {
  local d=/tmp/sluice-kafka
  [[ ${1:-} == --dir ]] && d=$2
  [[ -f $d/.kafka-sh ]] || die "stop: $d was not made by kafka.sh"
  stop_dir "$d"
  echo "kafka stopped ($d)"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  wait) python3 "$here/kafka/probe.py" "$1" --brokers "${2:-1}" --timeout "${3:-120}" ;;
  producer-perf) run_class org.apache.kafka.tools.ProducerPerformance "$@" ;;
  consumer-perf) run_class org.apache.kafka.tools.ConsumerPerformance "$@" ;;
  api-versions) run_class org.apache.kafka.tools.BrokerApiVersionsCommand "$@" ;;
  topics) run_class org.apache.kafka.tools.TopicCommand "$@" ;;
  run) run_class "$@" ;;
  classes) classes ;;
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
