#!/usr/bin/env bash
# Makes sure this machine has what the project's commands need, and that
# local Postgres and Redis are up, as the tests and the local stack expect:
# Postgres on 127.0.0.1:5432 (trust auth, user postgres), Redis on
# 127.0.0.1:6379.
#
# Where something is missing and apt is usable (Debian or Ubuntu, as root or
# with password-less sudo), it is installed; a PostgreSQL this script
# installed gets a cluster that trusts local TCP connections (development
# only). Where that is not possible, it stops with one message naming
# everything to install, and `docker compose --env-file deploy/demo.env up` as the other way.
set -euo pipefail

missing=()
sudo=
can_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" = 0 ]; then
    sudo=
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=sudo
  else
    return 1
  fi
}
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
# need COMMAND PACKAGE WHAT: installs PACKAGE when COMMAND is missing (and
# says so), or notes WHAT as missing and fails.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if can_apt; then
    echo "installing $3 (apt package $2): first run only" >&2
    apt_install "$2" && command -v "$1" >/dev/null 2>&1 && return 0
  fi
  missing+=("$3 (Debian/Ubuntu: apt-get install $2)")
  return 1
}

if ! command -v cargo >/dev/null 2>&1; then
  missing+=("Rust with cargo (https://rustup.rs)")
fi
# Debian puts the server's commands (pg_ctlcluster, pg_isready) on PATH
# through postgresql-common; the client comes with them.
installed_postgres=
if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if need pg_ctlcluster postgresql "PostgreSQL 15 or newer"; then installed_postgres=1; fi
fi
need psql postgresql-client "the PostgreSQL client (psql)" || true
need redis-server redis-server "Redis 7 or newer" || true
need redis-cli redis-tools "the Redis client (redis-cli)" || true
# The SDK check and schemathesis run in Python venvs.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if command -v python3 >/dev/null 2>&1 && can_apt; then
    echo "installing Python's venv (apt package python3-venv): first run only" >&2
    apt_install python3-venv || true
  fi
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    missing+=("Python 3 with venv (Debian/Ubuntu: apt-get install python3-venv)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  {
    echo "This machine is missing what the project needs, and cannot install it here:"
    printf '  - %s\n' "${missing[@]}"
    echo "Install those and run the command again, or run the whole stack with 'docker compose --env-file deploy/demo.env up'."
  } >&2
  exit 1
fi

if [ -n "$installed_postgres" ]; then
  version=$(ls /etc/postgresql | sort -n | tail -n1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
    $sudo pg_createcluster "$version" main >/dev/null
  fi
  # A cluster this script made is a development one: trust local TCP, as
  # the project's URLs (postgres://postgres@127.0.0.1:5432/...) expect.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  echo "configuring the new local PostgreSQL $version cluster to trust 127.0.0.1 and ::1 (development)" >&2
  printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | $sudo tee "$hba.project" >/dev/null
  $sudo sh -c "cat '$hba' >>'$hba.project' && mv '$hba.project' '$hba'"
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  $sudo pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -n1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
up=
for _ in $(seq 1 60); do
  if pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    up=1
    break
  fi
  sleep 0.5
done
if [ -z "$up" ]; then
  echo "Postgres or Redis did not come up" >&2
  exit 1
fi

# The read replica test (gateway/tests/read_replica.rs) takes a base backup
# of the local server and streams from it, which needs a replication entry
# in pg_hba.conf (`all` does not cover replication). Added only where the
# server already trusts the superuser from 127.0.0.1, as a development
# cluster does: there it gives nothing that trust does not already give.
# A reload is enough; nothing is restarted.
replication_ok() {
  psql "host=127.0.0.1 port=5432 user=postgres dbname=postgres replication=true" \
    -Atc 'IDENTIFY_SYSTEM' >/dev/null 2>&1
}
if ! replication_ok; then
  line='host replication all 127.0.0.1/32 trust'
  hba=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SHOW hba_file' 2>/dev/null || true)
  trusted=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "SELECT 1 FROM pg_hba_file_rules WHERE type = 'host' AND 'all' = ANY(database)
        AND 'all' = ANY(user_name) AND address = '127.0.0.1' AND auth_method = 'trust' LIMIT 1" \
    2>/dev/null || true)
  as_root=
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root=sudo; else as_root=none; fi
  fi
  # The file must be this machine's (not, say, a container's).
  if [ "$trusted" = 1 ] && [ -n "$hba" ] && [ -f "$hba" ] && [ "$as_root" != none ]; then
    if ! $as_root grep -qxF "$line" "$hba"; then
      echo "allowing replication from 127.0.0.1 in $hba (development cluster; for the read replica test)" >&2
      $as_root sed -i "1i $line" "$hba" || true
    fi
    psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT pg_reload_conf()' >/dev/null || true
    sleep 0.5
  fi
  if ! replication_ok; then
    echo "note: the local Postgres refuses replication connections from 127.0.0.1, so" \
      "gateway/tests/read_replica.rs will fail: add '$line' to its pg_hba.conf and reload" >&2
  fi
fi
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SHOW wal_level' 2>/dev/null)" = minimal ]; then
  echo "note: the local Postgres has wal_level=minimal, so gateway/tests/read_replica.rs" \
    "will fail: set wal_level=replica and restart it" >&2
fi
exit 0
