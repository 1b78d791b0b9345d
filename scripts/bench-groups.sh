#!/usr/bin/env bash
# Group coordinator speed: rebalance time of three librdkafka consumers on a
# 100-partition topic (group.initial.rebalance.delay.ms 3000 and 0), and
# OffsetCommit throughput (default flush policy and flush.messages=1), each
# against a fresh `sluice --cores 1` on loopback. One JSON line per
# measurement; engine/examples/groups_e2e.rs says what each field means.
# Usage: scripts/bench-groups.sh [--repeats N] [--seconds S]
#        [--only rebalance|commit] [--bootstrap HOST:PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p sluice-engine --bin sluice --example groups_e2e
# Clients and broker share these CPUs: the figures are for this machine.
echo "{\"bench\":\"machine\",\"cpus\":$(nproc),\"kernel\":\"$(uname -r)\"}"
exec "$target/release/examples/groups_e2e" --sluice "$target/release/sluice" "$@"
