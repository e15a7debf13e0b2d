#!/usr/bin/env bash
# Runs every test of the workspace against the local Postgres and Redis.
# Each test gets its own database and Redis key prefix, so they run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The status page test renders /dashboard in a real headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium for the status page test (first run only)" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
    { echo "cannot install chromium here: install it (apt-get install chromium) or set CHROMIUM" >&2; exit 1; }
fi
# The PgBouncer test runs the gateway behind Debian's pgbouncer.
if ! [ -x /usr/sbin/pgbouncer ] && ! command -v pgbouncer >/dev/null 2>&1; then
  echo "installing pgbouncer for the pooler test (first run only)" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null ||
    { echo "cannot install pgbouncer here: install it (apt-get install pgbouncer)" >&2; exit 1; }
fi
if [ ! -x target/debug/gateway ]; then
  echo "first run: building the workspace and its tests (several minutes on two cores)" >&2
fi
# Tests that start sent-sim with SimConfig::default() record their traffic to
# Sent there; scripts/sdk-check.sh checks it against Sent's official SDK.
export SENT_SIM_RECORD_DIR="$PWD/target/sent-sim-record"
rm -rf "$SENT_SIM_RECORD_DIR" && mkdir -p "$SENT_SIM_RECORD_DIR"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
# A filtered run may start no simulator: then there is no traffic to check.
if [ $# -gt 0 ]; then unset SENT_SIM_RECORD_DIR; fi
scripts/sdk-check.sh
