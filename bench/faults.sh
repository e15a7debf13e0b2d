#!/usr/bin/env bash
# Fault runs (bench/src/bin/suite): the whole stack as processes (sent-sim,
# gateway, two workers, Postgres, Redis) under mixed traffic, one run per
# fault, each fault in the middle third of its run. redis-cluster-failover
# runs on a 6-node Redis Cluster of its own (3 primaries, 3 replicas, the
# queue in 3 shards) and SIGKILLs a primary whose replica was paused for
# the 2 s before, so that the writes of those 2 s die with it. Every run counts the
# messages submitted, accepted, delivered, failed, lost and sent twice at
# Sent, and fails on a loss, a double send, or a message left without a
# final status. Logs of each run go to bench/results/suite/<fault>/.
#
#   bench/faults.sh                        # every fault, 45 s each at 100 ops/s
#   bench/faults.sh --short                # the CI version: 12 s each at 40 ops/s
#   bench/faults.sh --only redis-restart   # one fault (--list names them)
#   PROFILE=debug bench/faults.sh --short  # the debug build (what CI has built)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

PROFILE=${PROFILE:-release}
profile=()
if [ "$PROFILE" = release ]; then profile=(--release); fi
# The product apart from bench: bench turns on common's test-support feature
# (the Redis Cluster harness), which must not end up in the binaries tested.
cargo build "${profile[@]}" -q -p gateway -p worker -p sent-sim
cargo build "${profile[@]}" -q -p bench
mkdir -p bench/results
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/$PROFILE/suite" faults "$@" | tee bench/results/faults.txt
