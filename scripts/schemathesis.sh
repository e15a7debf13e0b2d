#!/usr/bin/env bash
# Schemathesis (PyPI) against the gateway's own /openapi.json: every
# operation, with generated valid and invalid requests, and the check that no
# answer is a server error. Starts a release gateway against the local
# Postgres and Redis (fresh database, its own Redis prefix) with an API key,
# every webhook provider configured and rate limits off, then fails on any
# 5xx, on a panic or error line in the gateway's log, or if the gateway died.
#
#   scripts/schemathesis.sh                       # 100 examples per operation, 300 s at most
#   MAX_EXAMPLES=20 MAX_TIME=60 scripts/schemathesis.sh
#   SEED=1 scripts/schemathesis.sh                # reproduce a run
#   PROFILE=debug scripts/schemathesis.sh         # the debug build (CI: no release build)
#
# Schemathesis is installed in a venv under target/ on first use. The report
# (JUnit, and the gateway's log) is left in target/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

# A free port unless told (a fixed one may be another run's).
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
MAX_EXAMPLES=${MAX_EXAMPLES:-100}
MAX_TIME=${MAX_TIME:-300}
# One worker: with two, Hypothesis parses its filters' source in both threads
# at once, and CPython 3.11 can fail that ("SystemError: AST constructor
# recursion depth mismatch"), an error in the tool, not in the gateway.
WORKERS=${WORKERS:-1}
DB=sent_gateway_schemathesis
PREFIX=schemathesis:$(date +%s)
source scripts/secrets.sh
source scripts/redis_keys.sh
KEY=$(random_key)
VENV=target/schemathesis-venv
OUT=target/schemathesis
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis==4.32.5
fi

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release -q -p gateway; else cargo build -q -p gateway; fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres

gw_pid=
cleanup() {
  if [ -n "$gw_pid" ]; then kill "$gw_pid" 2>/dev/null || true; wait "$gw_pid" 2>/dev/null || true; fi
  drop_redis_keys "$PREFIX"
}
trap cleanup EXIT

# Production profile (as deployed), rate limits off so that the run measures
# the parsers and not the limiter. The webhook secrets make /webhooks/* live:
# schemathesis cannot sign, so it sees 401s there, which is the point.
APP_ENV=production LOG_LEVEL=info LOG_FORMAT=json GATEWAY_BIND=127.0.0.1:$PORT \
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB REDIS_URL=redis://127.0.0.1:6379 \
REDIS_PREFIX=$PREFIX API_KEYS=schemathesis:$KEY RATELIMIT_ENABLED=false \
SENT_DM_WEBHOOK_SECRET=$(random_whsec) \
STRIPE_WEBHOOK_SECRET=$(random_key) TELEGRAM_WEBHOOK_SECRET_TOKEN=$(random_key) \
  "$TARGET_DIR/$PROFILE/gateway" >"$OUT/gateway.log" 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "the gateway did not start:" >&2; cat "$OUT/gateway.log" >&2; exit 1
  fi
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

status=$(curl -s -o "$OUT/openapi.json" -w '%{http_code}' "http://127.0.0.1:$PORT/openapi.json" || true)
if [ "$status" != 200 ]; then
  echo "GET /openapi.json answered $status: no OpenAPI document to test" >&2
  exit 2
fi

seed=()
if [ -n "${SEED:-}" ]; then seed=(--seed "$SEED"); fi
result=0
# From $OUT, where schemathesis keeps its example database and crash cache.
(cd "$OUT" && "../../$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks not_a_server_error \
  --header "Authorization: Bearer $KEY" \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers "$WORKERS" \
  --request-timeout 10 \
  --suppress-health-check all \
  --report junit --report-junit-path junit.xml \
  "${seed[@]}") || result=$?

if ! kill -0 "$gw_pid" 2>/dev/null; then
  echo "the gateway died during the run; see $OUT/gateway.log" >&2
  exit 1
fi
if grep -E '"level":"ERROR"|panicked' "$OUT/gateway.log" >&2; then
  echo "the gateway logged errors during the run (above); see $OUT/gateway.log" >&2
  result=1
fi
if [ "$result" -ne 0 ]; then
  echo "schemathesis: FAILED (exit $result); report in $OUT/" >&2
  exit "$result"
fi
echo "schemathesis: no server error"
