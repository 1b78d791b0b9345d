#!/usr/bin/env bash
# Throughput and broker CPU per GB over PLAINTEXT, SSL and SASL_SSL on the
# embedded broker (workloads/security-sweep.yaml, each protocol at its
# maximum sustainable rate), then the cost of a new connection per
# protocol (`sluice-bench handshake`). Shared machines are noisy, so the
# sweep runs in several rounds, each a fresh broker taking the protocols in
# turn, and the summary gives every round's figures, their medians and
# the TLS/plaintext ratios, with the load average around the run.
# Usage: scripts/bench-security.sh [ROUNDS] [DURATION_S]   (defaults 3 and the workload's)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
duration=${2:-}
cargo build --release -q -p sluice-harness --bin sluice-bench
bin=${CARGO_TARGET_DIR:-target}/release/sluice-bench

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  "$bin" run workloads/security-sweep.yaml --quiet --out "$work/round-$round" \
    ${duration:+--duration "$duration"} >/dev/null
  echo "round $round done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
python3 scripts/security-summary.py "$work"/round-*/*/*/run.json
"$bin" handshake --connections 200 --rounds 5
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
