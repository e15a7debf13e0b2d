#!/usr/bin/env bash
# Benchmark of forwarding (issue 15), against the local Postgres (fresh
# database) and Redis, everything on this machine: a release gateway takes
# Stripe events signed with Stripe's scheme and Telegram updates with their
# secret token; a release worker forwards them (FORWARD_STRIPE_URL,
# FORWARD_TELEGRAM_URL) to forward_receiver, a local receiver that answers
# 200 at once and counts each webhook-id once.
#
#  ingest   the baseline, in the same run: STRIPE_EVENTS Stripe events as fast
#           as the gateway acknowledges them at CONNECTIONS connections, no
#           worker running (verified, stored, 200). Then the inbox is emptied.
#  forward  end to end: the worker runs; STRIPE_EVENTS Stripe events (at
#           CONNECTIONS connections) and TELEGRAM_EVENTS Telegram updates (at
#           TELEGRAM_CONNECTIONS) are posted as fast as the gateway answers,
#           and the run waits until the receiver has every one. Rate per
#           destination = events / (last arrival - first post); latency =
#           arrival at the receiver - post to the gateway, per event (same
#           clock). At saturation, so the latency is mostly the backlog's.
#  paced    the latency below saturation: RATE Stripe events/s and RATE/10
#           Telegram updates/s for PACED_SECONDS.
#
# Telegram updates go out one at a time per destination, in update_id order
# (the provider's order), so their rate is bounded by one round trip to
# the receiver plus the claim and the record; Stripe's go out
# FORWARD_CONCURRENCY at a time.
#
# The figures depend on what else the machine runs (compiles of other work
# show up as noise): compare runs taken close together; the ratio to the
# ingest baseline of the same run is steadier than either rate.
#
#   bench/forward.sh            # 20,000 Stripe events, 2,000 Telegram updates
#   bench/forward.sh --short    # a few seconds: 1,500 and 200
#   STRIPE_EVENTS=50000 FORWARD_CONCURRENCY=32 bench/forward.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHORT=0
if [ "${1:-}" = --short ]; then SHORT=1; fi
scripts/services.sh

if [ $SHORT = 1 ]; then
  STRIPE_EVENTS=${STRIPE_EVENTS:-1500}; TELEGRAM_EVENTS=${TELEGRAM_EVENTS:-200}; PACED_SECONDS=${PACED_SECONDS:-2}
else
  STRIPE_EVENTS=${STRIPE_EVENTS:-20000}; TELEGRAM_EVENTS=${TELEGRAM_EVENTS:-2000}; PACED_SECONDS=${PACED_SECONDS:-10}
fi
CONNECTIONS=${CONNECTIONS:-32}
TELEGRAM_CONNECTIONS=${TELEGRAM_CONNECTIONS:-4}
RATE=${RATE:-200}
FORWARD_CONCURRENCY=${FORWARD_CONCURRENCY:-8}
DB_CONNECTIONS=${DB_CONNECTIONS:-16}
PORT=${PORT:-8076}
RECEIVER_PORT=${RECEIVER_PORT:-8097}
METRICS_PORT=${METRICS_PORT:-9176}
DB=${DB:-sent_gateway_bench_forward}
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB
PREFIX=benchfwd:$(date +%s)
source scripts/secrets.sh
STRIPE_WEBHOOK_SECRET=$(random_whsec)
TELEGRAM_WEBHOOK_SECRET_TOKEN=$(random_key)
source bench/lib.sh
TMP=$(mktemp -d)
trap 'cleanup; rm -rf "$TMP"' EXIT

cargo build --release -q -p gateway -p worker -p bench
fresh_database

loadgen() {
  local out=$1; shift
  target/release/loadgen --target "127.0.0.1:$PORT" --seconds 600 "$@" > "$TMP/$out.json"
}
stripe() { loadgen "$1" --scenario stripe --webhook-secret="$STRIPE_WEBHOOK_SECRET" "${@:2}"; }
telegram() { loadgen "$1" --scenario telegram --webhook-secret="$TELEGRAM_WEBHOOK_SECRET_TOKEN" "${@:2}"; }
stats() { curl -sf "http://127.0.0.1:$RECEIVER_PORT/stats"; }
# Waits until the receiver has $1 Stripe events and $2 Telegram updates (or $3 seconds pass).
wait_received() {
  local deadline=$((SECONDS + $3))
  until stats | python3 -c "import json,sys; s=json.load(sys.stdin)
sys.exit(0 if s.get('stripe',{}).get('unique',0) >= $1 and s.get('telegram',{}).get('unique',0) >= $2 else 1)"; do
    if [ $SECONDS -ge $deadline ]; then echo "the receiver lacks events after $3 s: $(stats)" >&2; return; fi
    if ! kill -0 "$worker_pid" 2>/dev/null; then echo "the worker exited:" >&2; tail -5 "$RESULTS/forward-worker.log" >&2; exit 1; fi
    sleep 0.2
  done
}

export APP_ENV=production LOG_LEVEL=warn DATABASE_URL REDIS_URL=redis://127.0.0.1:6379 REDIS_PREFIX=$PREFIX
export DATABASE_MAX_CONNECTIONS=$DB_CONNECTIONS SENT_DM_WEBHOOK_SECRET=$(random_whsec)
export STRIPE_WEBHOOK_SECRET TELEGRAM_WEBHOOK_SECRET_TOKEN

GATEWAY_BIND=127.0.0.1:$PORT API_KEYS=bench:$(random_key) \
RATELIMIT_ENABLED=true RATELIMIT_WEBHOOKS=10000000/second \
  target/release/gateway & pids+=($!)
RECEIVER_BIND=127.0.0.1:$RECEIVER_PORT target/release/forward_receiver & pids+=($!)
wait_port "$PORT"
wait_port "$RECEIVER_PORT"

# --- ingest: the baseline, no worker running ---
stripe ingest --connections "$CONNECTIONS" --requests "$STRIPE_EVENTS"
stored=$(sql "SELECT count(*) FROM webhook_inbox")
sql "TRUNCATE webhook_inbox CASCADE" > /dev/null

# --- forward: end to end, the worker running ---
SENT_BASE_URL=http://127.0.0.1:9 SENT_DM_API_KEY=unused WORKER_METRICS_BIND=127.0.0.1:$METRICS_PORT \
RECONCILE_INTERVAL_SECS=3600 FORWARD_CONCURRENCY=$FORWARD_CONCURRENCY \
FORWARD_STRIPE_URL=http://127.0.0.1:$RECEIVER_PORT/stripe FORWARD_STRIPE_SECRET=$(random_whsec) \
FORWARD_TELEGRAM_URL=http://127.0.0.1:$RECEIVER_PORT/telegram FORWARD_TELEGRAM_SECRET=$(random_whsec) \
FORWARD_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8 \
  target/release/worker > "$RESULTS/forward-worker.log" 2>&1 & pids+=($!); worker_pid=$!
wait_port "$METRICS_PORT"
stripe forward-stripe --connections "$CONNECTIONS" --requests "$STRIPE_EVENTS" & s=$!
if [ "$TELEGRAM_EVENTS" -gt 0 ]; then  # TELEGRAM_EVENTS=0: Stripe alone
  telegram forward-telegram --connections "$TELEGRAM_CONNECTIONS" --requests "$TELEGRAM_EVENTS" & t=$!
  wait $s $t
else
  echo '{"requests_per_sec": 0, "errors": 0}' > "$TMP/forward-telegram.json"
  wait $s
fi
wait_received "$STRIPE_EVENTS" "$TELEGRAM_EVENTS" 600
stats > "$TMP/forward-received.json"
forwards=$(sql "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FILTER (WHERE state <> 'delivered'),
                       coalesce(sum(attempts - 1), 0)
                  FROM webhook_forwards")

# --- paced: latency below saturation ---
curl -sf -X DELETE "http://127.0.0.1:$RECEIVER_PORT/stats"
paced_stripe=$((RATE * PACED_SECONDS))
paced_telegram=$((RATE * PACED_SECONDS / 10))
stripe paced-stripe --connections 4 --rate "$RATE" --requests "$paced_stripe" & s=$!
telegram paced-telegram --connections 1 --rate $((RATE / 10)) --requests "$paced_telegram" \
  --first-update-id $((TELEGRAM_EVENTS * 2 + 1)) & t=$!
wait $s $t
wait_received "$paced_stripe" "$paced_telegram" 120
stats > "$TMP/paced-received.json"

python3 - "$TMP" "$stored" "$forwards" "$SHORT" "$FORWARD_CONCURRENCY" "$RATE" <<'PY' | tee "$RESULTS/forward.txt"
import json, sys
tmp, stored, forwards, short, concurrency, rate = sys.argv[1:7]
delivered, undelivered, retries = (int(x) for x in forwards.split())
def load(name):
    with open(f"{tmp}/{name}.json") as f:
        return json.load(f)
ingest = load("ingest")
sent = {"stripe": load("forward-stripe"), "telegram": load("forward-telegram")}
received, paced = load("forward-received"), load("paced-received")
print(f"forwarding benchmark{' (--short)' if short == '1' else ''}: 2 cores shared with other work, figures noisy")
print(f"ingest baseline   {ingest['requests_per_sec']:8.0f} Stripe events/s acknowledged, no worker "
      f"({ingest['requests_ok']} ok, {ingest['errors']} errors, {stored} stored; "
      f"ack p50 {ingest['p50_ms']:.1f} ms, p99 {ingest['p99_ms']:.1f} ms)")
first = min(r["first_sent"] for r in received.values())
last = max(r["last_arrival"] for r in received.values())
total = sum(r["unique"] for r in received.values())
for name in ("stripe", "telegram"):
    if name not in received:
        continue
    r, s = received[name], sent[name]
    span = r["last_arrival"] - r["first_sent"]
    print(f"forward {name:9} {r['unique'] / span:8.0f} events/s end to end "
          f"({r['unique']} received once each, {r['duplicates']} duplicates, in {span:.1f} s; "
          f"posted at {s['requests_per_sec']:.0f}/s, {s['errors']} errors); "
          f"post to receipt p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms (saturated: backlog included)")
e2e = total / (last - first)
print(f"forward total     {e2e:8.0f} events/s end to end = {e2e / ingest['requests_per_sec']:.2f} x the ingest baseline "
      f"(stripe alone {received['stripe']['unique'] / (received['stripe']['last_arrival'] - received['stripe']['first_sent']) / ingest['requests_per_sec']:.2f} x); "
      f"FORWARD_CONCURRENCY={concurrency}, {delivered} delivered, {undelivered} not, {retries} retries")
for name, per_sec in (("stripe", int(rate)), ("telegram", int(rate) // 10)):
    r = paced[name]
    print(f"paced {name:11} {per_sec:5d}/s: post to receipt p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"max {r['max_ms']:.1f} ms ({r['unique']} events)")
PY
