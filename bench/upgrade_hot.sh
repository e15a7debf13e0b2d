#!/usr/bin/env bash
# Time of migration 20261212000000_message_status_changes_hot (issue 13) on
# an existing installation: every earlier migration on a database of its
# own, N messages generated in SQL (2% failed, the rest delivered, a week
# and more of them), then that migration alone, timed. It builds its
# indexes under a SHARE lock: for that long, accepts and status changes wait.
#
#   bench/upgrade_hot.sh              # 1 million messages
#   N=10000000 bench/upgrade_hot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

N=${N:-1000000}
DB=sent_gateway_bench_upgrade_hot
MIGRATION=migrations/20261212000000_message_status_changes_hot.sql
psql() { command psql -h 127.0.0.1 -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
fresh_database() { psql -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres; }

fresh_database
psql -c "CREATE DATABASE $DB" postgres
for f in migrations/*.sql; do
  [[ "$f" < "$MIGRATION" ]] || break
  psql -f "$f" "$DB" > /dev/null
done
# One message every 2 seconds back from now; triggers off (the rollups are
# not what is measured).
psql "$DB" <<SQL
ALTER TABLE messages DISABLE TRIGGER USER;
INSERT INTO messages (id, client, phone_number, parameters, channels, status, created_at, updated_at,
                      accepted_at, delivered_at, failed_at, provider_message_id, provider_message_ids, attempts)
SELECT ulid_time_prefix(t) || lpad(upper(to_hex(g)), 16, '0'), 'client-' || (g % 5),
       '+1415555' || lpad((g % 10000)::text, 4, '0'), '{"name": "Ada"}', '{sms}',
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'delivered' END, t, t, t,
       CASE WHEN g % 50 <> 0 THEN t END, CASE WHEN g % 50 = 0 THEN t END,
       'sent-' || g, ARRAY['sent-' || g], 1
  FROM generate_series(1, $N) g, LATERAL (SELECT now() - make_interval(secs => 2 * g) AS t) x;
ANALYZE messages;
SQL
size=$(psql -tA -c "SELECT pg_size_pretty(sum(pg_total_relation_size(name))) FROM message_partitions()" "$DB")
start=$(date +%s%N)
psql -f "$MIGRATION" "$DB"
end=$(date +%s%N)
printf '%s: %.1f s at %d messages (%s with indexes before)\n' "$(basename "$MIGRATION")" \
  "$(( (end - start) / 1000000 ))e-3" "$N" "$size"
fresh_database
