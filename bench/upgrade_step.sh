#!/usr/bin/env bash
# Time of one migration that rebuilds a large table's indexes (issue 13), on
# an existing installation: every earlier migration on a database of its
# own, N rows generated in SQL, then that migration alone, timed.
#
#   hot    20261212000000_message_status_changes_hot: N messages (2% failed,
#          the rest delivered, a week and more of them). It builds its
#          indexes under a SHARE lock: for that long, accepts and status
#          changes wait.
#   inbox  20261214000000_inbox_queue_apart: N webhook events (1% pending,
#          0.5% unmatched, the rest processed; bodies of about 500 bytes).
#          It locks the inbox against writes before its copy, and against
#          reads too from its first DROP INDEX, to its commit: for that
#          long, webhooks wait (and the pull API, for the last part).
#
#   bench/upgrade_step.sh hot              # 1 million rows
#   N=10000000 bench/upgrade_step.sh inbox
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh

STEP=${1:?usage: bench/upgrade_step.sh hot|inbox}
N=${N:-1000000}
DB=sent_gateway_bench_upgrade_step
psql() { command psql -h 127.0.0.1 -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
fresh_database() { psql -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres; }

# One row every 2 seconds (messages) or every second (events) back from
# now; triggers off (what they feed is not what is measured).
case "$STEP" in
  hot)
    MIGRATION=migrations/20261212000000_message_status_changes_hot.sql
    SIZE="SELECT pg_size_pretty(sum(pg_total_relation_size(name))) FROM message_partitions()"
    SEED="ALTER TABLE messages DISABLE TRIGGER USER;
INSERT INTO messages (id, client, phone_number, parameters, channels, status, created_at, updated_at,
                      accepted_at, delivered_at, failed_at, provider_message_id, provider_message_ids, attempts)
SELECT ulid_time_prefix(t) || lpad(upper(to_hex(g)), 16, '0'), 'client-' || (g % 5),
       '+1415555' || lpad((g % 10000)::text, 4, '0'), '{\"name\": \"Ada\"}', '{sms}',
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'delivered' END, t, t, t,
       CASE WHEN g % 50 <> 0 THEN t END, CASE WHEN g % 50 = 0 THEN t END,
       'sent-' || g, ARRAY['sent-' || g], 1
  FROM generate_series(1, $N) g, LATERAL (SELECT now() - make_interval(secs => 2 * g) AS t) x;
ANALYZE messages;" ;;
  inbox)
    MIGRATION=migrations/20261214000000_inbox_queue_apart.sql
    SIZE="SELECT pg_size_pretty(pg_total_relation_size('webhook_inbox'))"
    SEED="ALTER TABLE webhook_inbox DISABLE TRIGGER USER;
INSERT INTO webhook_inbox (provider, event_id, event_type, headers, body, received_at, state, attempts,
                           processed_at, subject_id, message_id)
SELECT 'sent', 'evt_' || g, 'message.delivered',
       jsonb_build_object('x-webhook-id', 'ep_1', 'x-webhook-timestamp', '1700000000',
                          'x-webhook-signature', 'v1,' || md5(g::text) || md5(g::text)),
       convert_to(json_build_object('type', 'message.delivered', 'id', 'evt_' || g,
                                    'data', json_build_object('id', 'sent-' || g, 'status', 'delivered',
                                                              'channel', 'sms', 'detail', repeat('x', 300)))::text,
                  'UTF8'),
       t, s, 1, CASE WHEN s = 'processed' THEN t END, CASE WHEN s = 'unmatched' THEN 'sent-' || g END,
       CASE WHEN s = 'processed' THEN 'msg-' || g END
  FROM generate_series(1, $N) g,
       LATERAL (SELECT now() - make_interval(secs => g) AS t,
                       CASE WHEN g % 100 = 0 THEN 'pending' WHEN g % 200 = 1 THEN 'unmatched'
                            ELSE 'processed' END AS s) x;
ANALYZE webhook_inbox;" ;;
  *) echo "usage: bench/upgrade_step.sh hot|inbox" >&2; exit 2 ;;
esac

fresh_database
psql -c "CREATE DATABASE $DB" postgres
for f in migrations/*.sql; do
  [[ "$f" < "$MIGRATION" ]] || break
  psql -f "$f" "$DB" > /dev/null
done
psql "$DB" <<< "$SEED"
size=$(psql -tA -c "$SIZE" "$DB")
start=$(date +%s%N)
psql -f "$MIGRATION" "$DB"
end=$(date +%s%N)
printf '%s: %.1f s at %d rows (%s with indexes before)\n' "$(basename "$MIGRATION")" \
  "$(( (end - start) / 1000000 ))e-3" "$N" "$size"
fresh_database
