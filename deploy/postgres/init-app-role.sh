#!/bin/sh
# First start of the Postgres container, run by the image's entrypoint as the
# superuser (the only thing the superuser is used for): the role the gateway,
# the workers and the migrations connect as, and its database.
#
# The role is not a superuser and cannot create roles or databases. It owns
# the database and so its public schema (Postgres 15: owned by
# pg_database_owner), the tables the migrations create, and the views.
# The migrations grant the views to dashboard_reader, a cluster-wide group a
# non-superuser cannot create, so it is created here.
#
# Passwords reach SQL only as psql variables quoted with :'name', never by
# pasting them into the text: any character is safe in them.
set -eu
: "${GATEWAY_DB_PASSWORD:?GATEWAY_DB_PASSWORD is required (the gateway role's password)}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
  -v app_user="${GATEWAY_DB_USER:-gateway}" \
  -v app_db="${GATEWAY_DB_NAME:-sent_gateway}" \
  -v app_password="$GATEWAY_DB_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE :"app_db" OWNER :"app_user";
SELECT 'CREATE ROLE dashboard_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dashboard_reader') \gexec
-- Only the owner and dashboards connect to it (PUBLIC may by default).
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"app_db" TO dashboard_reader;
SQL
