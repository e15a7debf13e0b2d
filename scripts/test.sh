#!/usr/bin/env bash
# Runs every test of the workspace against the local Postgres and Redis.
# Each test gets its own database and Redis key prefix, so they run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
# The status page test renders /dashboard in a real headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium for the status page test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
