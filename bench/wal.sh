#!/usr/bin/env bash
# Postgres WAL bytes over the whole life of a message (issue 13): accepted by
# the gateway, sent by a worker, Sent's webhooks through the inbox, a signed
# status callback for each change. Each run has a Postgres cluster of its own
# (so the WAL measured is the run's alone) and prints which tables, indexes
# and kinds of record wrote it (pg_walinspect).
#
#   bench/wal.sh                                  # this checkout, 3000 messages
#   BASELINE=94a8aa8 ROUNDS=3 bench/wal.sh        # against another commit, alternating
#   MESSAGES=10000 bench/wal.sh
#   SUITE_PG_OPTIONS="-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=5 \
#     -c logging_collector=on -c log_directory=/tmp/wal-pg-log" bench/wal.sh
#                                                 # server options for the run's Postgres: here, slow plans logged
#
# BASELINE is built in a git worktree under target/wal-baseline with a target
# directory of its own (the first build there takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

MESSAGES=${MESSAGES:-3000}
ROUNDS=${ROUNDS:-1}
cargo build --release -q -p gateway -p worker -p sent-sim -p bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

builds=()
if [ -n "${BASELINE:-}" ]; then
  tree=$target_dir/wal-baseline/src
  git worktree remove --force "$tree" 2>/dev/null || true
  git worktree add --detach -f "$tree" "$BASELINE" > /dev/null
  (cd "$tree" && CARGO_TARGET_DIR=$target_dir/wal-baseline/target \
     cargo build --release -q -p gateway -p worker -p sent-sim)
  builds+=(--bin "$target_dir/wal-baseline/target/release")
fi
builds+=(--bin "$target_dir/release")

mkdir -p bench/results
"$target_dir/release/suite" wal --messages "$MESSAGES" --rounds "$ROUNDS" "${builds[@]}" | tee bench/results/wal.txt
