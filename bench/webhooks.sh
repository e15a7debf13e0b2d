#!/usr/bin/env bash
# Benchmark of webhooks in (issue 4), against the local Postgres (fresh
# database) and Redis, everything on this machine:
#
#  store    a release gateway (webhook rate limit raised, not off) takes signed
#           `message.delivered` events on POST /webhooks/sent from the load
#           generator at CONNECTIONS connections for SECONDS_PER seconds, as
#           fast as it answers, no worker running. Figures: events durably
#           stored per second (rows counted in webhook_inbox, not answers
#           counted), p50/p99 of the 200 acknowledgement.
#  process  then a release worker starts and applies that backlog. The events
#           name MESSAGES real accepted messages created first by SQL (with
#           Sent ids), each event a different message, so each one is matched,
#           moves its message to `delivered` and lands in its timeline.
#           Rate = events / (last processed_at - first processed_at).
#  steady   RATE events/s for SECONDS_PER seconds with the worker running (the
#           aim: 5,000/s with p99 under 20 ms): ack latency, and how long an
#           event waited from stored to applied (processed_at - received_at).
#
# CPU seconds per process in each phase (and per event) show where the time
# goes. Other work on the machine (compiles) shows as "other processes":
# throughput and latency are only comparable between runs taken close
# together; CPU per event much less depends on it.
#
#   bench/webhooks.sh                     # 20 s phases, 64 connections
#   SECONDS_PER=10 RATE=8000 bench/webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

SECONDS_PER=${SECONDS_PER:-20}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-5000}
MESSAGES=${MESSAGES:-500000}
DB_CONNECTIONS=${DB_CONNECTIONS:-16}
PORT=${PORT:-8079}
DB=sent_gateway_bench_webhooks
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PREFIX=benchwh:$(date +%s)
source scripts/secrets.sh
SECRET=$(random_whsec)
source bench/lib.sh
TMP=$(mktemp -d)
trap 'cleanup; rm -rf "$TMP"' EXIT

cargo build --release -q -p gateway -p worker -p bench
fresh_database

now() { date +%s.%N; }
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
# Runs the load generator for the webhook scenario; its JSON goes to $1.json,
# its own CPU seconds to $1.cpu.
loadgen() {
  local out=$1; shift
  /usr/bin/time -f "%U %S" -o "$TMP/$out.cpu" \
    target/release/loadgen --target "127.0.0.1:$PORT" --scenario webhook --webhook-secret "$SECRET" \
      --sent-ids "$MESSAGES" --connections "$CONNECTIONS" --seconds "$SECONDS_PER" "$@" > "$TMP/$out.json"
}
# Waits until nothing is pending (or $1 seconds pass).
wait_drained() {
  local deadline=$((SECONDS + $1))
  while [ "$(sql "SELECT EXISTS (SELECT FROM webhook_inbox WHERE state = 'pending')
                      OR EXISTS (SELECT FROM webhook_inbox WHERE state = 'unmatched')")" = t ]; do
    if [ $SECONDS -ge $deadline ]; then echo "inbox not drained after $1 s" >&2; return; fi
    sleep 0.2
  done
}

export APP_ENV=production LOG_LEVEL=warn DATABASE_URL REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=$PREFIX
export DATABASE_MAX_CONNECTIONS=$DB_CONNECTIONS SENT_DM_WEBHOOK_SECRET=$SECRET

GATEWAY_BIND=127.0.0.1:$PORT API_KEYS=bench:$(random_key) \
RATELIMIT_ENABLED=true RATELIMIT_WEBHOOKS=10000000/second \
  target/release/gateway & pids+=($!); gw_pid=$!
wait_port "$PORT"

# MESSAGES accepted messages whose Sent ids the events name (the gateway has migrated).
# Their ids are this week's, as the gateway's are: `messages` has a partition
# per week of ids and none for any other id.
sql "INSERT INTO messages (id, client, phone_number, template_name, status, attempts,
                           provider_message_id, provider_message_ids, sending_at, accepted_at)
     SELECT ulid_time_prefix(now()) || lpad(i::text, 16, '0'), 'bench', '+14155550123', 'welcome', 'accepted', 1,
            'bench-sent-' || i, ARRAY['bench-sent-' || i], now(), now()
       FROM generate_series(0, $MESSAGES - 1) i" > /dev/null
sql "VACUUM ANALYZE messages" > /dev/null
sql "CHECKPOINT" > /dev/null

# --- store: as fast as the gateway answers, no worker running ---
cpu_store_0=$(cpu_snapshot "gateway:$gw_pid")
loadgen store
cpu_store_1=$(cpu_snapshot "gateway:$gw_pid")
stored=$(sql "SELECT count(*) FROM webhook_inbox")

# --- process: one release worker applies the backlog ---
SENT_BASE_URL=http://127.0.0.1:9 SENT_DM_API_KEY=unused WORKER_METRICS_BIND=127.0.0.1:0 \
RECONCILE_INTERVAL_SECS=3600 \
  target/release/worker & pids+=($!); worker_pid=$!
cpu_process_0=$(cpu_snapshot "worker:$worker_pid"); t0=$(now)
wait_drained 600
cpu_process_1=$(cpu_snapshot "worker:$worker_pid"); t1=$(now)
process=$(sql "SELECT count(*) FILTER (WHERE state = 'processed'),
                      extract(epoch FROM max(processed_at) - min(processed_at))
                 FROM webhook_inbox")

# --- steady: RATE events/s with the worker running, on messages not used yet ---
last_id=$(sql "SELECT coalesce(max(id), 0) FROM webhook_inbox")
cpu_steady_0=$(cpu_snapshot "gateway:$gw_pid" "worker:$worker_pid")
loadgen steady --rate "$RATE" --sent-id-offset "$stored"
cpu_steady_1=$(cpu_snapshot "gateway:$gw_pid" "worker:$worker_pid")
wait_drained 120
steady=$(sql "SELECT count(*), count(*) FILTER (WHERE state = 'processed'),
                     1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at)),
                     1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at - received_at))
                FROM webhook_inbox WHERE id > $last_id")

inbox_states=$(sql "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state, count(*) n FROM webhook_inbox GROUP BY 1 ORDER BY 1) s")
delivered=$(sql "SELECT count(*) FROM messages WHERE status = 'delivered'")
timeline=$(sql "SELECT count(*) FROM message_events WHERE source = 'sent'")

python3 - "$TMP" "$stored" "$process" "$steady" "$inbox_states" "$delivered" "$timeline" "$MESSAGES" \
  "$(getconf CLK_TCK)" "$cpu_store_0" "$cpu_store_1" "$cpu_process_0" "$cpu_process_1" "$t0" "$t1" \
  "$cpu_steady_0" "$cpu_steady_1" "$RATE" <<'PY' | tee "$RESULTS/webhooks.txt"
import json, sys
tmp = sys.argv[1]
def load(name):
    with open(f"{tmp}/{name}.json") as f:
        result = json.load(f)
    with open(f"{tmp}/{name}.cpu") as f:
        result["cpu"] = sum(float(x) for x in f.read().split())
    return result
store, steady_load = load("store"), load("steady")
stored = int(sys.argv[2])
processed, span = sys.argv[3].split()
processed, span = int(processed), float(span)
s_total, s_processed, lag50, lag99 = sys.argv[4].split()
s_total, s_processed = int(s_total), int(s_processed)
states, delivered, timeline, messages = sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
tick = int(sys.argv[9])
process_window = float(sys.argv[15]) - float(sys.argv[14])
rate = int(sys.argv[18])
def snapshot(words):
    return {tuple(w.rsplit(":", 1)[0].split(":", 1)): int(w.rsplit(":", 1)[1]) for w in words.split()}
def cpu(before, after, extra={}):
    before, after, out = snapshot(before), snapshot(after), {}
    for (group, pid), ticks in after.items():
        out[group] = out.get(group, 0) + (ticks - before.get((group, pid), 0)) / tick
    return {**out, **extra}
def show(use, seconds, events):
    use = dict(use)
    idle = use.pop("idle", 0)
    parts = [f"{g} {c:.1f} ({c / events * 1e6:.0f} us/event)" for g, c in sorted(use.items(), key=lambda x: -x[1])]
    other = max(0.0, 2 * seconds - idle - sum(use.values()))
    return ", ".join(parts) + f"; other processes {other:.1f}, idle {idle:.1f} (of {2 * seconds:.1f} on 2 cores)"
store_cpu = cpu(sys.argv[10], sys.argv[11], {"loadgen": store["cpu"]})
process_cpu = cpu(sys.argv[12], sys.argv[13])
steady_cpu = cpu(sys.argv[16], sys.argv[17], {"loadgen": steady_load["cpu"]})
row = "{:<52} {:>9} {:>8} {:>8} {:>8}"
print(f"webhooks in: release gateway + worker, Postgres and Redis local, {store['connections']} connections, one 2-core machine")
print(row.format("phase", "events/s", "p50 ms", "p99 ms", "max ms"))
print(row.format("store: POST /webhooks/sent, rows in webhook_inbox", f"{stored / store['seconds']:.0f}",
                 f"{store['p50_ms']:.2f}", f"{store['p99_ms']:.2f}", f"{store['max_ms']:.1f}"))
print(row.format("process: backlog applied by 1 worker", f"{processed / span:.0f}" if span > 0 else "-", "", "", ""))
print(row.format(f"steady: {rate}/s offered, worker running (ack)", f"{s_total / steady_load['seconds']:.0f}",
                 f"{steady_load['p50_ms']:.2f}", f"{steady_load['p99_ms']:.2f}", f"{steady_load['max_ms']:.1f}"))
print(row.format("steady: stored -> applied (processed_at - received_at)", "", f"{float(lag50):.1f}", f"{float(lag99):.1f}", ""))
print()
print(f"store: {stored} rows in {store['seconds']:.1f} s; {store['requests_ok']} answered 200, {store['errors']} errors {store['statuses']}")
print("  CPU s: " + show(store_cpu, store["seconds"], stored))
print(f"process: {processed} in {span:.2f} s (first to last processed_at); {delivered} of {messages} messages delivered, "
      f"{timeline} timeline events from Sent")
print("  CPU s: " + show(process_cpu, process_window, processed))
print(f"steady: {s_total} rows in {steady_load['seconds']:.1f} s, {s_processed} processed; "
      f"{steady_load['errors']} errors {steady_load['statuses']}")
print("  CPU s: " + show(steady_cpu, steady_load["seconds"], max(s_total, 1)))
print(f"inbox at the end: {states}")
PY
