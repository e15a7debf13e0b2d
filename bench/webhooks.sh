#!/usr/bin/env bash
# Benchmark of webhooks in (issue 4), against the local Postgres (fresh
# database) and Redis, everything on this machine:
#
#  store    a release gateway (webhook rate limit raised, not off) takes signed
#           `message.delivered` events on POST /webhooks/sent from the load
#           generator at CONNECTIONS connections for SECONDS. Figures: events
#           durably stored per second (rows counted in webhook_inbox, not
#           answers counted), p50/p99 of the 200 acknowledgement.
#  process  then a release worker starts and applies the backlog. The events
#           name MESSAGES real accepted messages created first by SQL (with
#           Sent ids), so each one is matched, moves its message to
#           `delivered` and lands in its timeline. Rate = events /
#           (last processed_at - first processed_at), from Postgres' clock.
#
# CPU seconds per process during each phase show where the time goes. Other
# work on the machine (compiles) shows as missing idle time: figures are only
# comparable between runs taken close together.
#
#   bench/webhooks.sh                     # 20 s, 64 connections
#   SECONDS_PER=10 bench/webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

SECONDS_PER=${SECONDS_PER:-20}
CONNECTIONS=${CONNECTIONS:-64}
MESSAGES=${MESSAGES:-200000}
DB_CONNECTIONS=${DB_CONNECTIONS:-16}
PORT=${PORT:-8079}
DB=sent_gateway_bench_webhooks
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PREFIX=benchwh:$(date +%s)
SECRET=whsec_c2VudC1zaW0tZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=
RESULTS=bench/results
mkdir -p "$RESULTS"

cargo build --release -q -p gateway -p worker -p bench
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null || true
}
trap cleanup EXIT

sql() { psql -h 127.0.0.1 -U postgres -tA -F ' ' -c "$1" "$DB"; }
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }
# CPU ticks (user + system) so far of each process, as "group:pid:ticks"
# words; Postgres counts every backend of the bench database and the server's
# own processes (WAL writer, checkpointer...). "idle:0:ticks" is the machine's.
cpu_snapshot() {
  local pg entry pid
  pg=$(psql -h 127.0.0.1 -U postgres -tA -c "SELECT pid FROM pg_stat_activity
         WHERE datname = '$DB' OR backend_type <> 'client backend'" postgres)
  for entry in $(for p in $pg; do echo "postgres:$p"; done) "$@"; do
    pid=${entry#*:}
    [ -r "/proc/$pid/stat" ] || continue
    awk -v e="$entry" '{ sub(/.*\) /, ""); printf "%s:%d ", e, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
  done
  awk '/^cpu / { printf "idle:0:%d ", $5 + $6 }' /proc/stat
}

export APP_ENV=production LOG_LEVEL=warn DATABASE_URL REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=$PREFIX
export DATABASE_MAX_CONNECTIONS=$DB_CONNECTIONS SENT_DM_WEBHOOK_SECRET=$SECRET

GATEWAY_BIND=127.0.0.1:$PORT API_KEYS=bench:bench-key-0123456789 \
RATELIMIT_ENABLED=true RATELIMIT_WEBHOOKS=10000000/second \
  target/release/gateway & pids+=($!); gw_pid=$!
wait_port "$PORT"

# MESSAGES accepted messages whose Sent ids the events name (the gateway has migrated).
sql "INSERT INTO messages (id, client, phone_number, template_name, status, attempts,
                           provider_message_id, provider_message_ids, sending_at, accepted_at)
     SELECT 'BENCH' || lpad(i::text, 21, '0'), 'bench', '+14155550123', 'welcome', 'accepted', 1,
            'bench-sent-' || i, ARRAY['bench-sent-' || i], now(), now()
       FROM generate_series(0, $MESSAGES - 1) i" > /dev/null
sql "VACUUM ANALYZE messages" > /dev/null
sql "CHECKPOINT" > /dev/null

# --- store: signed events at CONNECTIONS connections, no worker running ---
cpu_before=$(cpu_snapshot "gateway:$gw_pid")
/usr/bin/time -f "%U %S" -o "$RESULTS/.loadgen-cpu" \
  target/release/loadgen --target "127.0.0.1:$PORT" --scenario webhook --webhook-secret "$SECRET" \
    --sent-ids "$MESSAGES" --connections "$CONNECTIONS" --seconds "$SECONDS_PER" > "$RESULTS/.loadgen-out"
cpu_after=$(cpu_snapshot "gateway:$gw_pid")
load=$(cat "$RESULTS/.loadgen-out")
loadgen_cpu=$(cat "$RESULTS/.loadgen-cpu")
rm -f "$RESULTS/.loadgen-out" "$RESULTS/.loadgen-cpu"
stored=$(sql "SELECT count(*) FROM webhook_inbox")

# --- process: one release worker applies the backlog ---
SENT_BASE_URL=http://127.0.0.1:9 SENT_DM_API_KEY=unused WORKER_METRICS_BIND=127.0.0.1:0 \
RECONCILE_INTERVAL_SECS=3600 \
  target/release/worker & pids+=($!); worker_pid=$!
cpu_before_w=$(cpu_snapshot "worker:$worker_pid" "gateway:$gw_pid"); t0=$(date +%s.%N)
deadline=$((SECONDS + 600))
while [ "$(sql "SELECT count(*) FROM webhook_inbox WHERE state IN ('pending', 'unmatched')")" != 0 ]; do
  if [ $SECONDS -ge $deadline ]; then echo "inbox not drained after 600 s" >&2; break; fi
  sleep 0.5
done
cpu_after_w=$(cpu_snapshot "worker:$worker_pid" "gateway:$gw_pid"); t1=$(date +%s.%N)
process=$(sql "SELECT count(*) FILTER (WHERE state = 'processed'),
                      extract(epoch FROM max(processed_at) - min(processed_at))
                 FROM webhook_inbox")
inbox_states=$(sql "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state, count(*) n FROM webhook_inbox GROUP BY 1 ORDER BY 1) s")
delivered=$(sql "SELECT count(*) FROM messages WHERE status = 'delivered'")
timeline=$(sql "SELECT count(*) FROM message_events WHERE source = 'sent'")

python3 - "$load" "$stored" "$process" "$inbox_states" "$delivered" "$timeline" "$loadgen_cpu" \
  "$cpu_before" "$cpu_after" "$cpu_before_w" "$cpu_after_w" "$(getconf CLK_TCK)" "$MESSAGES" "$t0" "$t1" <<'PY' | tee "$RESULTS/webhooks.txt"
import json, sys
load = json.loads(sys.argv[1])
stored = int(sys.argv[2])
processed, span = sys.argv[3].split()
processed, span = int(processed), float(span)
states, delivered, timeline = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
loadgen_cpu = sum(float(x) for x in sys.argv[7].split())
tick, messages, window = int(sys.argv[12]), int(sys.argv[13]), float(sys.argv[15]) - float(sys.argv[14])
def snapshot(words):
    return {tuple(w.rsplit(":", 1)[0].split(":", 1)): int(w.rsplit(":", 1)[1]) for w in words.split()}
def cpu(before, after):
    before, after, out = snapshot(before), snapshot(after), {}
    for (group, pid), ticks in after.items():
        out[group] = out.get(group, 0) + (ticks - before.get((group, pid), 0)) / tick
    return out
def show(use, seconds, extra={}):
    use = {**use, **extra}
    idle = use.pop("idle", 0)
    parts = [f"{g} {c:.1f}" for g, c in sorted(use.items(), key=lambda x: -x[1])]
    other = max(0.0, 2 * seconds - idle - sum(use.values()))
    return ", ".join(parts) + f", other processes {other:.1f}, idle {idle:.1f} (of {2 * seconds:.1f} on 2 cores)"
store_cpu = cpu(sys.argv[8], sys.argv[9])
process_cpu = cpu(sys.argv[10], sys.argv[11])
seconds = load["seconds"]
row = "{:<46} {:>10} {:>9} {:>9} {:>9}"
print(f"webhooks in: {load['connections']} connections, release gateway + worker, Postgres and Redis local, one 2-core machine")
print(row.format("phase", "events/s", "p50 ms", "p99 ms", "max ms"))
print(row.format("POST /webhooks/sent, stored in webhook_inbox", f"{stored / seconds:.0f}",
                 f"{load['p50_ms']:.2f}", f"{load['p99_ms']:.2f}", f"{load['max_ms']:.1f}"))
print(row.format("inbox processed by 1 worker (pending -> done)", f"{processed / span:.0f}" if span > 0 else "-", "", "", ""))
print(f"store: {stored} rows stored in {seconds:.1f} s; {load['requests_ok']} answered 200, "
      f"{load['errors']} errors {load['statuses']}")
print("store CPU seconds: " + show(store_cpu, seconds, {"loadgen": loadgen_cpu}))
print(f"process: {processed} processed in {span:.2f} s (first to last processed_at); inbox: {states}")
print(f"process: {delivered} of {messages} messages delivered, {timeline} timeline events from Sent")
print(f"process CPU seconds over {window:.1f} s: " + show(process_cpu, window))
PY
