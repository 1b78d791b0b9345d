#!/usr/bin/env bash
# One broker with many partitions (default 1,000 topics x 10): idle RSS,
# Metadata latency for all topics, clean restart and restart after SIGKILL,
# each over several rounds, with the data directory's disk footprint. Before
# each shutdown 20 records go to each partition of the first 100 topics, so
# restarts have data to recover (and the time that takes is reported: a
# restarted broker may answer Metadata before it serves, so each restart is
# timed until all partitions are led and until single-record produces answer
# at the latency they had before it). One JSON line per
# round, then a summary of medians with min and max.
# scripts/bench-partitions.py says how each figure is taken. Everything is
# written under a temporary directory that is removed at the end.
# With --workload FILE, sluice-bench then runs that workload against the
# same broker (workloads/many-partitions-fixed-rate.yaml: a fixed rate over
# 1,000 more partitions), its report on stdout and run.json on stderr.
# Usage: scripts/bench-partitions.sh [--rounds N] [--topics N] [--partitions N]
#        [--workload FILE] [-- BROKER ARGS]   (e.g. -- --cores 1)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sluice-engine --bin sluice -p sluice-harness --bin sluice-bench
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
# On failure the broker's log is kept, next to the working directory.
trap 'rc=$?; [ $rc = 0 ] || cp "$work/broker.log" bench-partitions-broker.log 2>/dev/null; rm -rf "$work"' EXIT
python3 scripts/bench-partitions.py --sluice "$bin/sluice" --work "$work" \
  --bench "$bin/sluice-bench" "$@"
