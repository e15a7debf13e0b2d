#!/usr/bin/env bash
# Runs every test of the workspace against the local Postgres and Redis.
# Each test gets its own database and Redis key prefix, so they run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
