-- Optional, before migrations/20261211100000_partitioned_messages.sql, on a
-- large installation, while it runs: checks once, with no lock that an
-- accept or a status change waits for (VALIDATE takes SHARE UPDATE
-- EXCLUSIVE; ADD ... NOT VALID an ACCESS EXCLUSIVE for milliseconds), that
-- every message id and every event's message id is below the ULID prefix
-- of a Monday four weeks ahead. The migration then attaches the existing
-- tables as the partition of everything below that Monday without reading
-- them (bench/upgrade.sh PRESTEP=1 measures both ways).
--
-- Run the upgrade before that Monday: from then on these constraints
-- refuse new messages until it has run.
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f bench/sql/upgrade_prestep.sql
SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((ms >> (5 * (9 - i))) & 31)::int + 1, 1), ''
                  ORDER BY i) AS bound
  FROM (SELECT floor(extract(epoch FROM date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                        + interval '4 weeks') * 1000)::bigint AS ms) m,
       generate_series(0, 9) i
\gset
ALTER TABLE messages ADD CONSTRAINT messages_partition_bound CHECK (id < :'bound') NOT VALID;
ALTER TABLE message_events ADD CONSTRAINT message_events_partition_bound CHECK (message_id < :'bound') NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_partition_bound;
ALTER TABLE message_events VALIDATE CONSTRAINT message_events_partition_bound;
