#!/usr/bin/env bash
# Checks the monitoring as code with promtool (Debian's `prometheus` package,
# installed here when missing):
#   1. promtool check rules  deploy/prometheus/alerts.yml
#   2. promtool test rules   deploy/prometheus/alerts.test.yml (each alert
#      fires on one series and stays quiet on another)
#   3. promtool check config deploy/prometheus/prometheus.yml (it loads the rules),
#      and every alert's runbook_url has its heading in docs/runbook.md
#   4. promtool check metrics on GET /metrics of a gateway and of a worker it
#      starts itself (debug build, fresh database, own Redis prefix, free
#      ports), after some traffic so that most metrics have a value.
# Prints each check; exits non-zero on the first failure.
#
#   scripts/check-alerts.sh
#   PROFILE=release scripts/check-alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null
fi
echo "== $(promtool --version 2>&1 | head -n1)"

RULES=deploy/prometheus/alerts.yml
TESTS=deploy/prometheus/alerts.test.yml
echo "== promtool check rules $RULES"
promtool check rules "$RULES"
echo "== promtool test rules $TESTS"
promtool test rules "$TESTS"
echo "== promtool check config deploy/prometheus/prometheus.yml (loads $RULES)"
promtool check config deploy/prometheus/prometheus.yml

echo "== every alert has an entry in docs/runbook.md (its runbook_url's anchor)"
python3 - "$RULES" <<'PY'
import re, sys
rules = open(sys.argv[1]).read()
alerts = re.findall(r"^\s*- alert: (\S+)", rules, re.M)
urls = dict(re.findall(r"- alert: (\S+)[\s\S]*?runbook_url: (\S+)", rules))
# GitHub's anchors: lower case, punctuation dropped, spaces to dashes.
slug = lambda h: re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
anchors = {slug(l.lstrip("#")) for l in open("docs/runbook.md") if l.startswith("## ")}
bad = [a for a in alerts if not urls.get(a, "").endswith("docs/runbook.md#" + a.lower())
       or a.lower() not in anchors]
if bad:
    sys.exit(f"alerts without a runbook_url to their own entry in docs/runbook.md: {bad}")
print(f"  {len(alerts)} alerts, each with its runbook entry")
PY

# The live check: a gateway and a worker of this build.
scripts/services.sh
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GW_PORT=$(free_port)
WK_PORT=$(free_port)
SENT_PORT=$(free_port) # nothing listens there: sends fail with connect_error and retry
DB=sent_gateway_check_alerts
PREFIX=check-alerts:$(date +%s)
source scripts/secrets.sh
source scripts/redis_keys.sh
KEY=$(random_key)
OUT=target/check-alerts
mkdir -p "$OUT"

PROFILE=${PROFILE:-debug}
echo "== building the gateway and the worker ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release -q -p gateway -p worker; else cargo build -q -p gateway -p worker; fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  drop_redis_keys "$PREFIX"
}
trap cleanup EXIT

export APP_ENV=production LOG_LEVEL=info LOG_FORMAT=json \
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB REDIS_URL=redis://127.0.0.1:6379 \
  REDIS_PREFIX=$PREFIX API_KEYS=check:$KEY RATELIMIT_ENABLED=false \
  SENT_DM_WEBHOOK_SECRET=$(random_whsec) \
  SENT_DM_API_KEY=check-alerts-unused SENT_BASE_URL=http://127.0.0.1:$SENT_PORT
GATEWAY_BIND=127.0.0.1:$GW_PORT "$TARGET_DIR/$PROFILE/gateway" >"$OUT/gateway.log" 2>&1 &
pids+=($!)
# A forwarding destination, so that its gauges are rendered (never called:
# nothing is received for it).
WORKER_METRICS_BIND=127.0.0.1:$WK_PORT FORWARD_TELEGRAM_URL=https://forward.invalid/telegram \
  FORWARD_TELEGRAM_SECRET=$(random_whsec) "$TARGET_DIR/$PROFILE/worker" >"$OUT/worker.log" 2>&1 &
pids+=($!)

wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "$2 died; its log:" >&2; cat "$OUT/$2.log" >&2; exit 1; }
    done
    sleep 0.1
  done
  echo "$2 did not listen on port $1; see $OUT/$2.log" >&2
  exit 1
}
wait_port "$GW_PORT" gateway
wait_port "$WK_PORT" worker

# Some traffic: an accepted message (the worker then tries Sent and fails to
# connect), a rejected webhook, a 401.
GW=http://127.0.0.1:$GW_PORT
curl -fsS -o /dev/null -X POST "$GW/api/messages/send" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' \
  -d '{"phone_number": "+14155550123", "template_name": "welcome", "parameters": {"name": "Ada"}}'
curl -sS -o /dev/null -X POST "$GW/webhooks/sent" -H 'Content-Type: application/json' -d '{}'
curl -sS -o /dev/null "$GW/api/messages/01JDX00000000000000000000A"
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$WK_PORT/metrics" | grep -q '^worker_sent_requests_total' && break
  sleep 0.2
done

status=0
for target in "gateway $GW/metrics" "worker http://127.0.0.1:$WK_PORT/metrics"; do
  set -- $target
  curl -fsS "$2" >"$OUT/$1.metrics"
  echo "== promtool check metrics < $1 /metrics ($(grep -c '^# TYPE' "$OUT/$1.metrics") metrics)"
  if ! promtool check metrics <"$OUT/$1.metrics"; then
    echo "promtool check metrics failed on the $1's /metrics (saved in $OUT/$1.metrics)" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1
echo "check-alerts: rules valid, rule tests pass, gateway and worker metrics pass promtool"
