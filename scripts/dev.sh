#!/usr/bin/env bash
# Runs the whole stack on this machine as plain processes: sent-sim (a local
# Sent), the gateway on :8000 and a worker, against local Postgres and Redis.
# Ctrl-C stops all three. Any variable below can be overridden from the
# environment; set SENT_DM_API_KEY and SENT_BASE_URL to talk to the real Sent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The debug build by default: the one scripts/test.sh makes, so the
# dependencies are compiled once for both. PROFILE=release for speed.
PROFILE=${PROFILE:-debug}
if [ ! -x "target/$PROFILE/gateway" ]; then
  echo "first run: building the gateway, the worker and sent-sim ($PROFILE; several minutes on two cores)" >&2
fi
if [ "$PROFILE" = release ]; then
  cargo build --release -p gateway -p worker -p sent-sim
else
  cargo build -p gateway -p worker -p sent-sim
fi

DEV_WEBHOOK_SECRET=whsec_ZGV2LXNlY3JldC1vbmx5LWZvci1sb2NhbC11c2U=
export APP_ENV=${APP_ENV:-development}
export LOG_LEVEL=${LOG_LEVEL:-info}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/sent_gateway}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export GATEWAY_BIND=${GATEWAY_BIND:-127.0.0.1:8000}
export API_KEYS=${API_KEYS:-dev:dev-key-change-me}
export SENT_DM_WEBHOOK_SECRET=${SENT_DM_WEBHOOK_SECRET:-$DEV_WEBHOOK_SECRET}
export WORKER_METRICS_BIND=${WORKER_METRICS_BIND:-127.0.0.1:9100}
if [ -z "${SENT_DM_API_KEY:-}" ]; then
  export SENT_DM_API_KEY=sim_test_key SENT_BASE_URL=http://127.0.0.1:8090
  export SENT_SIM_BIND=127.0.0.1:8090 SENT_SIM_API_KEYS=sim_test_key
  export SENT_SIM_WEBHOOK_URL=http://$GATEWAY_BIND/webhooks/sent SENT_SIM_WEBHOOK_SECRET=$SENT_DM_WEBHOOK_SECRET
  "target/$PROFILE/sent-sim" & pids=($!)
else
  pids=()
fi
"target/$PROFILE/gateway" & pids+=($!)
"target/$PROFILE/worker" & pids+=($!)
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT

cat <<MSG

  gateway on http://$GATEWAY_BIND   (API key: ${API_KEYS#*:})
  try:  curl -s -X POST http://$GATEWAY_BIND/api/messages/send \\
          -H 'Authorization: Bearer ${API_KEYS#*:}' -H 'Content-Type: application/json' \\
          -d '{"phone_number": "+14155550123", "template_name": "welcome", "parameters": {"name": "Ada"}}'
  then: curl -s http://$GATEWAY_BIND/api/messages/<message_id> -H 'Authorization: Bearer ${API_KEYS#*:}'

MSG
wait -n
