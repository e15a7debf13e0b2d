#!/bin/sh
# First start of the Postgres container (after init-app-role.sh): the login
# role Grafana connects as. It is a member of dashboard_reader, which the
# migrations let read the dashboard views and nothing else (no table), and
# its transactions are read-only.
#
# The password reaches SQL only as a psql variable quoted with :'name',
# never pasted into the text: any character is safe in it.
set -eu
: "${DASHBOARD_PASSWORD:?DASHBOARD_PASSWORD is required (the grafana role's password)}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
  -v dashboard_user="${DASHBOARD_USER:-grafana}" \
  -v dashboard_password="$DASHBOARD_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE dashboard_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dashboard_reader') \gexec
CREATE ROLE :"dashboard_user" LOGIN PASSWORD :'dashboard_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE dashboard_reader;
ALTER ROLE :"dashboard_user" SET default_transaction_read_only = on;
SQL
