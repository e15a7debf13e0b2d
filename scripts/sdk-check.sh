#!/usr/bin/env bash
# Sent's official Python SDK (sentdm, pinned) as the referee of sent-sim and of
# the project's traffic to Sent (see sdk/README.md):
#   1. the fixtures of Sent's answers (common/tests/fixtures/sent_answers.json)
#      are regenerated with the SDK's models and must equal the checked-in file;
#   2. the SDK's client talks to a sent-sim binary on a free loopback port
#      (sdk/conformance.py: sends, statuses, every error class, signed webhooks);
#   3. when SENT_SIM_RECORD_DIR is set (scripts/test.sh sets it), the traffic
#      recorded there by the tests is checked against the SDK's types.
# Ends with a line "N passed, N failed"; exits non-zero on any failure.
#
#   scripts/sdk-check.sh
#   PROFILE=release scripts/sdk-check.sh            # the release build of sent-sim
#   SENT_SIM_RECORD_DIR=target/sent-sim-record scripts/sdk-check.sh
#
# The SDK is installed in a venv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

SDK_VERSION=0.46.0
PYDANTIC_VERSION=2.14.4
VENV=target/sdk-venv
OUT=target/sdk-check
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sentdm"), m.version("pydantic"))' 2>/dev/null || true)
if [ "$installed" != "$SDK_VERSION $PYDANTIC_VERSION" ]; then
  echo "installing sentdm==$SDK_VERSION pydantic==$PYDANTIC_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "sentdm==$SDK_VERSION" "pydantic==$PYDANTIC_VERSION"
fi
PY="$VENV/bin/python"

counts="$OUT/counts"
: >"$counts"
export SDK_CHECK_COUNTS="$PWD/$counts"
result=0

# 1. Fixtures.
fixtures=common/tests/fixtures/sent_answers.json
if "$PY" sdk/make_fixtures.py >"$OUT/sent_answers.json" && cmp -s "$OUT/sent_answers.json" "$fixtures"; then
  echo "PASS fixtures: $fixtures is what sdk/make_fixtures.py makes"
  echo "1 0" >>"$counts"
else
  echo "FAIL fixtures: $fixtures differs from sdk/make_fixtures.py's output ($OUT/sent_answers.json);" \
    "run $PY sdk/make_fixtures.py --write and review the change"
  diff -u "$fixtures" "$OUT/sent_answers.json" | head -40 || true
  echo "0 1" >>"$counts"
  result=1
fi

# 2. Conformance against a sent-sim binary.
PROFILE=${PROFILE:-debug}
if [ "$PROFILE" = release ]; then cargo build --release -q -p sent-sim; else cargo build -q -p sent-sim; fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
KEY=sdk-check-key-$RANDOM$RANDOM
SECRET=whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')

sim_pid=
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# The recording variables are for the tests' traffic, not for this run's
# deliberately invalid requests.
env -u SENT_SIM_RECORD -u SENT_SIM_RECORD_DIR \
  LOG_LEVEL=warn SENT_SIM_BIND=127.0.0.1:$PORT SENT_SIM_API_KEYS=$KEY SENT_SIM_WEBHOOK_SECRET=$SECRET \
  SENT_SIM_STEP_DELAY_MS=20 SENT_SIM_WEBHOOK_RETRY_BASE_MS=200 SENT_SIM_READ_RATE=0 \
  "$TARGET_DIR/$PROFILE/sent-sim" >"$OUT/sent-sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do
  if ! kill -0 "$sim_pid" 2>/dev/null; then
    echo "sent-sim did not start:" >&2; cat "$OUT/sent-sim.log" >&2; exit 1
  fi
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

SIM_URL=http://127.0.0.1:$PORT SIM_API_KEY=$KEY SIM_WEBHOOK_SECRET=$SECRET \
  "$PY" sdk/conformance.py || result=1
if ! kill -0 "$sim_pid" 2>/dev/null; then
  echo "FAIL sent-sim died during the run; see $OUT/sent-sim.log"
  echo "0 1" >>"$counts"
  result=1
fi
cleanup
sim_pid=

# 3. Recorded traffic.
if [ -n "${SENT_SIM_RECORD_DIR:-}" ]; then
  "$PY" sdk/check_recordings.py || result=1
else
  echo "recordings: SENT_SIM_RECORD_DIR is not set, nothing recorded to check"
fi

read -r passed failed < <(awk '{ p += $1; f += $2 } END { print p + 0, f + 0 }' "$counts")
if [ "$failed" -gt 0 ]; then result=1; fi
echo "$passed passed, $failed failed"
exit "$result"
