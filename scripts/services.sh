#!/usr/bin/env bash
# Makes sure local Postgres and Redis are up (starting them if not), as the
# tests and the local stack expect: Postgres on 127.0.0.1:5432 (trust auth,
# user postgres), Redis on 127.0.0.1:6379.
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 1 60); do
  if pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "Postgres or Redis did not come up" >&2
exit 1
