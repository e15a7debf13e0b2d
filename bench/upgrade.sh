#!/usr/bin/env bash
# The upgrade to partitioned messages (migrations/20261211100000_partitioned_messages.sql)
# on an installation with history: loads MESSAGES messages and their
# timelines (~5 events each; bench/sql/dashboard_load.sql, as
# bench/dashboard.sh does) into a database migrated up to the migration
# before it, then runs the migration in one transaction, as sqlx does, and
# prints how long it took and how long a reader of `messages` started
# meanwhile waited for its ACCESS EXCLUSIVE lock.
#
#   bench/upgrade.sh                    # 10 million messages, ~50 million events
#   MESSAGES=100000 bench/upgrade.sh    # a quick run
#   PRESTEP=1 bench/upgrade.sh          # check the bound first (bench/sql/upgrade_prestep.sql),
#                                       # as writes go on: the migration then reads no row
#   KEEP=1 bench/upgrade.sh             # keep the database afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

DB=${DB:-sent_gateway_bench_upgrade}
MESSAGES=${MESSAGES:-10000000}
CHUNK=${CHUNK:-1000000}
TARGET=20261211100000
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
db() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
now_ms() { date +%s%3N; }
recreate() { psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" "$@"; }
[ "${KEEP:-0}" = 1 ] || trap 'recreate >/dev/null 2>&1 || true' EXIT

echo "== database $DB, migrated up to before $TARGET"
recreate -c "CREATE DATABASE $DB"
# Every migration before the target, and the one that adds the columns the
# load fills on every event (20261213000000_events_carry_their_client: they
# do not depend on the layout).
for f in migrations/*.sql; do
  version=$(basename "$f" | cut -d_ -f1)
  if [ "$version" -lt "$TARGET" ] || [ "$version" = 20261213000000 ]; then db -1 -f "$f" >/dev/null; fi
done

# The load goes faster without the secondary indexes and the timeline's
# foreign key; all are back before the upgrade (the key NOT VALID: the
# migration neither checks nor needs it validated).
db <<'SQL'
ALTER TABLE message_events DROP CONSTRAINT message_events_message_id_fkey;
CREATE TABLE bench_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
   WHERE tablename IN ('messages', 'message_events') AND indexname NOT LIKE '%pkey';
DO $$ DECLARE i record; BEGIN
  FOR i IN SELECT indexname FROM bench_indexes LOOP EXECUTE format('DROP INDEX %I', i.indexname); END LOOP;
END $$;
SQL
echo "== loading $MESSAGES messages"
start=$(now_ms)
for ((first = 1; first <= MESSAGES; first += CHUNK)); do
  last=$((first + CHUNK)); [ "$last" -gt $((MESSAGES + 1)) ] && last=$((MESSAGES + 1))
  db -v first="$first" -v last="$last" -v legacy_ids=1 -f bench/sql/dashboard_load.sql
done
db -c "SET maintenance_work_mem = '1GB'" -c "SET max_parallel_maintenance_workers = 2" \
   -c "DO \$\$ DECLARE i record; BEGIN FOR i IN SELECT indexdef FROM bench_indexes LOOP EXECUTE i.indexdef; END LOOP; END \$\$" \
   -c "ALTER TABLE message_events ADD FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE NOT VALID" \
   -c "DROP TABLE bench_indexes" -c "VACUUM ANALYZE messages, message_events" -c "CHECKPOINT"
echo "loaded in $(( ($(now_ms) - start) / 1000 )) s: $(db -At -c "SELECT (SELECT count(*) FROM messages) || ' messages, ' || (SELECT count(*) FROM message_events) || ' events, ' || pg_size_pretty(pg_total_relation_size('messages') + pg_total_relation_size('message_events'))")"

if [ "${PRESTEP:-0}" = 1 ]; then
  echo "== the bound checked first (bench/sql/upgrade_prestep.sql), while a writer inserts events"
  some_id=$(db -At -c "SELECT id FROM messages LIMIT 1")
  start=$(now_ms)
  db -f bench/sql/upgrade_prestep.sql > /dev/null &
  prestep=$!
  sleep 0.5
  probe_start=$(now_ms)
  db -c "INSERT INTO message_events (message_id, status, source) VALUES ('$some_id', 'polled', 'worker')"
  echo "an event inserted meanwhile waited $(( $(now_ms) - probe_start )) ms"
  wait "$prestep"
  echo "prestep: $(( $(now_ms) - start )) ms"
fi

echo "== the upgrade"
start=$(now_ms)
db -1 -f "migrations/${TARGET}_partitioned_messages.sql" > /dev/null &
migration=$!
# A reader arriving once the migration holds its lock: how long it waits.
for _ in $(seq 1 100); do
  locked=$(db -At -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                       WHERE c.relname = 'messages' AND l.mode = 'AccessExclusiveLock' AND l.granted")
  [ "$locked" = 1 ] && break
  sleep 0.05
done
probe_start=$(now_ms)
db -At -c "SELECT count(*) FROM messages WHERE id = 'probe'" > /dev/null
probe_ms=$(( $(now_ms) - probe_start ))
wait "$migration"
total_ms=$(( $(now_ms) - start ))
echo "migration: ${total_ms} ms in one transaction (ACCESS EXCLUSIVE on messages, message_events, status_callbacks)"
echo "a reader of messages arriving as the lock was taken waited ${probe_ms} ms"
db -c "SELECT name, lower_id, upper_id FROM message_partitions() LIMIT 3"
db -At -c "SELECT 'after: ' || count(*) || ' messages through the partitioned parent' FROM messages"
