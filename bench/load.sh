#!/usr/bin/env bash
# The load run (bench/src/bin/suite): the whole stack as release processes
# (sent-sim, gateway, two workers, the local Postgres and Redis) under mixed
# traffic (55% sends, 5% batches of 10, 25% status reads, 15% signed
# webhooks, on top of sent-sim's own lifecycle webhooks for every message)
# at a fixed rate for minutes, then a ramp, 25% more each step, until a step
# no longer keeps up (1% errors, a p99 over 1 s, the client skipping
# operations, or more messages late, 2 s old and without a final status,
# than its operations a second). Then every accepted message must reach a
# final status.
# Prints latency per operation, the ramp, the accounting and peak memory of
# every process; fails when a message is lost or sent twice.
#
#   bench/load.sh                          # 150 ops/s for 180 s, then the ramp
#   bench/load.sh --rate 200 --seconds 60 --step-seconds 10
#   bench/load.sh --rate 150 --seconds 30 --max-steps 0 --private-postgres
#                                          # on a Postgres of its own: prints the
#                                          # statements that cost it most
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

cargo build --release -q -p gateway -p worker -p sent-sim -p bench
mkdir -p bench/results
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/release/suite" load "$@" | tee bench/results/load.txt
