#!/bin/sh
# First start of the Postgres container: a login role for dashboards that can
# only read (the migrations grant it SELECT on the views and message tables).
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dashboard_reader') THEN
    CREATE ROLE dashboard_reader NOLOGIN;
  END IF;
END \$\$;
CREATE ROLE grafana LOGIN PASSWORD '${DASHBOARD_PASSWORD}' IN ROLE dashboard_reader;
ALTER ROLE grafana SET default_transaction_read_only = on;
SQL
