#!/usr/bin/env bash
# A long soak of a three-broker Sluice cluster (issue 25, "Soak"): librdkafka
# produces 100-byte records with acks=all and idempotence at half the rate a
# 30 s probe finds sustainable, a consumer group reads everything while a
# second member joins and leaves every 3 minutes, one broker of three is
# stopped and restarted every 10 minutes, and retention (256 MiB per
# partition, 32 MiB segments) deletes segments all along. Every 10 s it
# samples each broker's RSS, file descriptors and open segment files, and
# the acknowledgement latency. At the end: every acknowledged record was
# consumed, each partition's records came in producing order with none
# twice, RSS, descriptors and open segments of the last ten minutes are
# within 25% of minutes 10-20 (the logs fill up to their retention in the
# first minutes), and p99 stayed within 2x of the first ten minutes.
# `target/release/examples/soak --check DIR` prints those trends again from
# a run's soak.csv. See docs/OPERATIONS.md, "Soak".
#
#   scripts/soak.sh [--minutes N] [--rate MSG_PER_S]
#
# --minutes  how long (default 60)
# --rate     records per second instead of half the probe's rate
#
# Not run in CI (an hour). Results: results/soak/<UTC timestamp>/
# (summary.txt, soak.csv, soak.html, env.txt); exit status 1 if a check
# failed, with the brokers' logs kept and their folder printed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
out=results/soak/$stamp
mkdir -p "$out"
cargo build --release -p sluice-engine --bin sluice -p sluice-harness --example soak
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet || echo ' (modified)')"
  echo "started $stamp"
  uname -srm
  nproc
  grep -m1 "model name" /proc/cpuinfo || true
  echo "load before: $(cat /proc/loadavg)"
} > "$out/env.txt"
set +e
target/release/examples/soak --sluice target/release/sluice --out "$out" "$@" 2>&1 | tee "$out/soak.log"
status=${PIPESTATUS[0]}
set -e
echo "load after: $(cat /proc/loadavg)" >> "$out/env.txt"
exit "$status"
