#!/usr/bin/env bash
# Benchmarks of the submission path (issue 2). Starts a release gateway against
# the local Postgres and Redis (fresh database), measures a bare axum JSON
# endpoint in the same run as the ceiling, and prints figures and ratios.
#
#   bench/run.sh                # 20 s per scenario
#   SECONDS_PER=10 bench/run.sh
#   GATEWAY_BIN=/path/to/other/target/release/gateway bench/run.sh   # another build (its schema too)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

SECONDS_PER=${SECONDS_PER:-20}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-8077}
BARE_PORT=${BARE_PORT:-8099}
DB=sent_gateway_bench
GATEWAY_BIN=${GATEWAY_BIN:-target/release/gateway}
PREFIX=bench:$(date +%s)
source scripts/secrets.sh
KEY=$(random_key)
source bench/lib.sh

cargo build --release -q -p gateway -p bench
fresh_database

rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
run() { target/release/loadgen --target "127.0.0.1:$1" --connections "$CONNECTIONS" --seconds "$SECONDS_PER" --api-key="$KEY" "${@:2}"; }

BARE_BIND=127.0.0.1:$BARE_PORT target/release/bare & pids+=($!); bare_pid=$!
wait_port "$BARE_PORT"
bare=$(run "$BARE_PORT" --scenario send)
bare_rss=$(rss_mb "$bare_pid")
kill "$bare_pid"

APP_ENV=production LOG_LEVEL=warn GATEWAY_BIND=127.0.0.1:$PORT \
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB DATABASE_MAX_CONNECTIONS=16 \
REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=$PREFIX API_KEYS=bench:$KEY RATELIMIT_ENABLED=false \
  "$GATEWAY_BIN" & pids+=($!); gw_pid=$!
wait_port "$PORT"
send=$(run "$PORT" --scenario send)
batch=$(run "$PORT" --scenario batch --batch-size 100 --connections 16)
gw_rss=$(rss_mb "$gw_pid")

stored=$(psql -h 127.0.0.1 -U postgres -tA -c "SELECT count(*) FROM messages" "$DB")
# apalis keeps every job in its queue's scheduled set; a queue per shard,
# named with a hash tag (common/src/queue.rs), so count them all.
queued=0
for key in $(redis-cli -h 127.0.0.1 --scan --pattern "{$PREFIX:send:*}:scheduled"); do
  queued=$((queued + $(redis-cli -h 127.0.0.1 ZCARD "$key")))
done

python3 - "$bare" "$send" "$batch" "$bare_rss" "$gw_rss" "$stored" "$queued" <<'PY' | tee "$RESULTS/submission.txt"
import json, sys
bare, send, batch = (json.loads(a) for a in sys.argv[1:4])
bare_rss, gw_rss, stored, queued = sys.argv[4:8]
row = "{:<34} {:>12} {:>9} {:>9} {:>8}"
print(row.format("scenario", "msgs/s", "p50 ms", "p99 ms", "errors"))
for name, r in [("bare axum JSON (ceiling)", bare), ("POST /api/messages/send", send), ("POST /api/messages/batch (100)", batch)]:
    print(row.format(name, f"{r['messages_per_sec']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", r["errors"]))
print(f"send / bare throughput ratio: {send['requests_per_sec'] / bare['requests_per_sec']:.2f}")
print(f"RSS peak: gateway {gw_rss} MB, bare {bare_rss} MB")
print(f"durably stored messages: {stored}, jobs in Redis: {queued}")
PY
# No worker runs: every message the gateway accepted must still have its job.
if [ "$stored" != "$queued" ]; then
  echo "accepted messages without their job in Redis: $stored stored, $queued jobs" >&2
  exit 1
fi
