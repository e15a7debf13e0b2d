#!/usr/bin/env bash
# Benchmark of the send path (issue 3): release sent-sim (no webhooks), a
# release gateway and 2 release worker processes against the local Postgres
# (fresh database) and Redis.
#
#  drain   N messages are queued through the gateway's /batch while no worker
#          runs; then both workers start and drain them. Rate = N / (last
#          accepted_at - first sending_at), from Postgres' own timestamps.
#  steady  500 messages/s through POST /api/messages/send for STEADY_SECONDS
#          with the workers running; p50/p99 of accepted_at - created_at,
#          computed in Postgres (percentile_cont).
#
# Also checked: every message ends `accepted`, and sent-sim saw no key
# accepted twice. CPU seconds per component during the drain show where the
# time goes.
#
#   bench/worker.sh                  # N=40000, 30 s steady
#   N=20000 STEADY_SECONDS=15 bench/worker.sh
#   WORKER_BIN=/path/to/other/worker bench/worker.sh   # A/B against another build's worker
#   BIN_DIR=/path/to/other/target/release bench/worker.sh  # ... or its gateway, sent-sim
#                                                          # and worker (its schema too)
#   WEEKS_AHEAD=21 bench/worker.sh   # weeks of `messages` made up to 21 ahead before the
#                                    # drain: 22 partitions, as 90 days kept and 8 ahead
#                                    # come to (a fresh database has 9; builds that
#                                    # partition only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

N=${N:-40000}
STEADY_RATE=${STEADY_RATE:-500}
STEADY_SECONDS=${STEADY_SECONDS:-30}
WORKERS=${WORKERS:-2}
BIN_DIR=${BIN_DIR:-target/release}
WORKER_BIN=${WORKER_BIN:-$BIN_DIR/worker}
WORKER_LOG_LEVEL=${WORKER_LOG_LEVEL:-warn}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-64}
DB_CONNECTIONS=${DB_CONNECTIONS:-16}
PORT=${PORT:-8078}
SIM_PORT=${SIM_PORT:-8091}
DB=sent_gateway_bench_worker
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PREFIX=benchw:$(date +%s)
source scripts/secrets.sh
DRAIN_KEY=$(random_key)
STEADY_KEY=$(random_key)
SIM_KEY=sim_bench_key
source bench/lib.sh

cargo build --release -q -p gateway -p worker -p sent-sim -p bench
fresh_database

# Waits until every message of `client` has left queued/sending (or $2 seconds pass).
wait_done() {
  local deadline=$((SECONDS + $2))
  # Whether one is left, through messages_unsent (no index names status): a
  # count of every message took a sixth of Postgres' time in the drain it
  # measures. Once a second: the rate is read from Postgres' timestamps, not
  # from when this loop sees the end, and a psql every 0.2 s took 7% of the
  # machine's CPU in the drain (perf, 2026-12-04). The drain's CPU seconds
  # below may then count up to a second of idle after its end.
  while [ "$(sql "SELECT EXISTS (SELECT 1 FROM messages WHERE client = '$1' AND status IN ('queued', 'sending')
                    AND accepted_at IS NULL AND failed_at IS NULL)")" != f ]; do
    if [ $SECONDS -ge $deadline ]; then echo "messages of $1 still pending after $2 s" >&2; return; fi
    for i in "${!workers[@]}"; do
      if ! kill -0 "${workers[$i]}" 2>/dev/null; then
        echo "worker $((i + 1)) exited:" >&2; tail -5 "$RESULTS/worker-$((i + 1)).log" >&2; exit 1
      fi
    done
    sleep 1
  done
}
# CPU ticks (user + system) so far of each process: "group:pid:ticks" words.
# Postgres: every backend of the bench database and the server's own processes.
cpu_snapshot() {
  local pg
  pg=$(psql -h 127.0.0.1 -U postgres -tA -c "SELECT pid FROM pg_stat_activity
         WHERE datname = '$DB' OR backend_type <> 'client backend'" postgres)
  for entry in $(for p in $pg; do echo "postgres:$p"; done) "${workers[@]/#/workers:}" \
               "sent-sim:$sim_pid" "gateway:$gw_pid" "redis:$(pidof redis-server | cut -d' ' -f1)"; do
    local pid=${entry#*:}
    [ -r "/proc/$pid/stat" ] || continue
    awk -v e="$entry" '{ sub(/.*\) /, ""); printf "%s:%d ", e, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
  done
  # The whole machine (all but idle and iowait), to tell how much others used.
  awk '/^cpu / { printf "machine:0:%d ", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

export APP_ENV=production LOG_LEVEL=warn DATABASE_URL REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=$PREFIX
export DATABASE_MAX_CONNECTIONS=$DB_CONNECTIONS

SENT_SIM_BIND=127.0.0.1:$SIM_PORT SENT_SIM_API_KEYS=$SIM_KEY \
SENT_SIM_IDEMPOTENCY_TTL_SECS=900 SENT_SIM_MESSAGE_RETENTION_SECS=30 \
  "$BIN_DIR/sent-sim" & pids+=($!); sim_pid=$!
GATEWAY_BIND=127.0.0.1:$PORT API_KEYS=drain:$DRAIN_KEY,steady:$STEADY_KEY RATELIMIT_ENABLED=false \
  "$BIN_DIR/gateway" & pids+=($!); gw_pid=$!
wait_port "$SIM_PORT"
wait_port "$PORT"
if [ -n "${WEEKS_AHEAD:-}" ]; then
  echo "partitions of messages: $(sql "SELECT message_partitions_ensure(now() + make_interval(weeks => $WEEKS_AHEAD));
                                      SELECT count(*) FROM message_partitions()" | tail -1)"
fi

workers=()
start_workers() {
  for i in $(seq 1 "$WORKERS"); do
    SENT_BASE_URL=http://127.0.0.1:$SIM_PORT SENT_DM_API_KEY=$SIM_KEY WORKER_CONCURRENCY=$WORKER_CONCURRENCY \
    WORKER_METRICS_BIND=127.0.0.1:0 RECONCILE_AFTER_SECS=600 LOG_LEVEL=$WORKER_LOG_LEVEL \
      "$WORKER_BIN" > "$RESULTS/worker-$i.log" 2>&1 & pids+=($!); workers+=($!)
  done
}

# --- drain: a backlog of N, queued before any worker runs ---
batches=$(( (N + 999) / 1000 ))
target/release/loadgen --target "127.0.0.1:$PORT" --api-key="$DRAIN_KEY" --scenario batch \
  --batch-size 1000 --connections 4 --requests "$batches" --seconds 600 > /dev/null
N=$(sql "SELECT count(*) FROM messages WHERE client = 'drain'")
cpu_before=$(cpu_snapshot)
start_workers
wait_done drain 600
cpu_after=$(cpu_snapshot)
drain=$(sql "SELECT count(*) FILTER (WHERE status = 'accepted'),
                    extract(epoch FROM max(accepted_at) - min(sending_at))
               FROM messages WHERE client = 'drain'")

# --- steady: 500 messages/s through the gateway, workers running ---
steady_load=$(target/release/loadgen --target "127.0.0.1:$PORT" --api-key="$STEADY_KEY" --scenario send \
  --rate "$STEADY_RATE" --connections 16 --seconds "$STEADY_SECONDS")
wait_done steady 120
steady=$(sql "SELECT count(*), count(*) FILTER (WHERE status = 'accepted'),
                     1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)),
                     1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)),
                     1000 * extract(epoch FROM max(accepted_at - created_at))
                FROM messages WHERE client = 'steady'")
statuses=$(sql "SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n FROM messages GROUP BY 1 ORDER BY 1) s")
stats=$(curl -s "http://127.0.0.1:$SIM_PORT/_sim/stats")

python3 - "$N" "$drain" "$steady" "$steady_load" "$stats" "$statuses" "$WORKERS" "$WORKER_CONCURRENCY" \
  "$cpu_before" "$cpu_after" "$(getconf CLK_TCK)" "$WORKER_BIN" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY' | tee "$RESULTS/worker.txt"
import json, sys
n = int(sys.argv[1])
accepted, seconds = sys.argv[2].split()
accepted, seconds = int(accepted), float(seconds)
s_total, s_accepted, p50, p99, worst = sys.argv[3].split()
load, stats, statuses = json.loads(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6]
workers, concurrency = sys.argv[7], sys.argv[8]
def snapshot(words):
    return {tuple(w.rsplit(":", 1)[0].split(":", 1)): int(w.rsplit(":", 1)[1]) for w in words.split()}
before, after, tick = snapshot(sys.argv[9]), snapshot(sys.argv[10]), int(sys.argv[11])
worker_bin, cores, loadavg = sys.argv[12:15]
cpu = {}
for (group, pid), ticks in after.items():
    cpu[group] = cpu.get(group, 0) + (ticks - before.get((group, pid), 0)) / tick
row = "{:<44} {:>10} {:>9} {:>9} {:>9}"
print(f"{workers} worker processes ({worker_bin}) x concurrency {concurrency}, sent-sim without webhooks,")
print(f"gateway, Postgres and Redis on this machine ({cores} cores; load average {loadavg} at the end)")
print(row.format("scenario", "msgs/s", "p50 ms", "p99 ms", "max ms"))
print(row.format(f"drain a backlog of {n}", f"{accepted / seconds:.0f}", "", "", ""))
print(row.format(f"steady {load['messages_per_sec']:.0f}/s via POST /send, {load['seconds']:.0f} s",
                 f"{load['messages_per_sec']:.0f}", f"{float(p50):.1f}", f"{float(p99):.1f}", f"{float(worst):.0f}"))
print(f"drain: {accepted}/{n} accepted in {seconds:.2f} s (first sending_at to last accepted_at)")
machine = cpu.pop("machine")
cpu["other processes"] = machine - sum(cpu.values())
print("drain CPU seconds: " + ", ".join(f"{g} {c:.1f}" for g, c in sorted(cpu.items(), key=lambda x: -x[1]))
      + f" (machine {machine:.1f} of {int(cores) * seconds:.1f})")
print(f"steady: {s_accepted}/{s_total} accepted, gateway errors {load['errors']}")
print(f"all messages: {statuses}")
print(f"sent-sim: accepted_requests {stats['accepted_requests']}, distinct keys {stats['distinct_idempotency_keys']}, "
      f"replays {stats['idempotent_replays']}, accepted_twice {stats['accepted_twice']}")
PY
