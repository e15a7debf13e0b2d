-- Status changes as HOT updates (issue 13).
--
-- An UPDATE is HOT (no new index entry, and only the changed bytes logged
-- when the new version lands on the same page) when it changes no column
-- that any index names, in its key, expression or condition, and the page
-- has room. Every status change writes `status` and `updated_at`, and four
-- indexes named one of them, so every change wrote the whole row again plus
-- an entry in each of the fourteen indexes (and five in the GIN index of
-- Sent's ids). Now no index names `status`, `updated_at`, `sending_at` or
-- `sent_at`, and the weeks' partitions keep half of each page free: a
-- message's `sending` and `sent` are HOT. `accepted` (Sent's ids), and
-- `delivered`, `read` and failures (which end the status polls) still
-- change an indexed column. Measured with bench/wal.sh: the README's
-- "Postgres cost per message".
--
-- Each replacement's condition is the query's, in columns only those rarer
-- changes write:
--   * not yet with Sent (the reconciler): no accepted_at and no failed_at;
--   * failed, as status IN ('failed', 'blocked', 'filtered', 'cancelled')
--     said: a failure sets failed_at, and only delivered or read rank above
--     it (status_rank);
--   * awaiting Sent's status (the polls): accepted, with Sent's id, neither
--     delivered, read nor failed, polled fewer than four times;
--   * Sent's answer or status missing: by last_error_code alone, newest
--     message first (the dashboard filters the status);
--   * Sent's ids: the GIN index no longer holds every message's empty array
--     (an entry for each insert, in one posting tree).
-- `messages_accepted_at` goes (nothing reads messages by acceptance time
-- since the rollups), and `messages_failed_at` with it (replaced by the
-- failures' index above).
--
-- Upgrade: each CREATE INDEX reads every partition under a SHARE lock:
-- writers wait, readers do not. The README's upgrade notes give the time
-- at 10 million messages.

DROP INDEX IF EXISTS messages_status_created;
DROP INDEX IF EXISTS messages_recent_failures;
DROP INDEX IF EXISTS messages_sent_anomalies;
DROP INDEX IF EXISTS messages_status_poll_due;
DROP INDEX IF EXISTS messages_accepted_at;
DROP INDEX IF EXISTS messages_failed_at;
DROP INDEX IF EXISTS messages_provider_ids;

CREATE INDEX messages_unsent ON messages (id)
  WHERE accepted_at IS NULL AND failed_at IS NULL;
CREATE INDEX messages_recent_failures ON messages (failed_at)
  WHERE failed_at IS NOT NULL AND delivered_at IS NULL AND read_at IS NULL;
CREATE INDEX messages_status_poll_due ON messages (status_polls, accepted_at)
  WHERE provider_message_id IS NOT NULL AND accepted_at IS NOT NULL AND status_polls < 4
    AND delivered_at IS NULL AND read_at IS NULL AND failed_at IS NULL;
CREATE INDEX messages_sent_anomalies ON messages (id)
  WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale');
CREATE INDEX messages_provider_ids ON messages USING gin (provider_message_ids) WITH (fastupdate = off)
  WHERE cardinality(provider_message_ids) > 0;

-- Room on each page for a row's next version. Half: the first change comes
-- within milliseconds of the insert, before any pruning, and a HOT chain's
-- dead versions are pruned on the page afterwards, so the table ends up no
-- larger than with full pages and every change moving the row. New pages of
-- existing partitions get it; their full pages stay as they are.
DO $$
DECLARE
  p record;
BEGIN
  FOR p IN SELECT name FROM message_partitions() LOOP
    EXECUTE format('ALTER TABLE %I SET (fillfactor = 50)', p.name);
  END LOOP;
END
$$;

-- As before (20261211100000_partitioned_messages.sql), with the fillfactor.
CREATE OR REPLACE FUNCTION message_partitions_ensure(upto timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  week timestamptz;
  lo text;
  hi text;
  m text;
  e text;
  created int := 0;
BEGIN
  SELECT max(p.upper_at) INTO week FROM message_partitions() p;
  week := coalesce(week, message_partition_week(now()));
  WHILE week <= upto LOOP
    lo := ulid_time_prefix(week);
    hi := ulid_time_prefix(week + interval '7 days');
    m := 'messages_p' || to_char(week AT TIME ZONE 'UTC', 'YYYYMMDD');
    e := 'message_events_p' || to_char(week AT TIME ZONE 'UTC', 'YYYYMMDD');
    EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                                     PRIMARY KEY (id)) WITH (fillfactor = 50)', m);
    EXECUTE format('CREATE TABLE %I (LIKE message_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                                     PRIMARY KEY (id),
                                     FOREIGN KEY (message_id) REFERENCES %I (id) ON DELETE CASCADE)', e, m);
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', m, lo, hi);
    EXECUTE format('ALTER TABLE message_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', e, lo, hi);
    created := created + 1;
    week := week + interval '7 days';
  END LOOP;
  RETURN created;
END
$$;

-- The view reads through the new indexes, with the same columns
-- (failure_reasons reads messages_sent_anomalies as it is).
CREATE OR REPLACE VIEW recent_failures AS
SELECT * FROM (
  (SELECT id AS message_id, client, status, last_error_code, last_error, attempts,
          dead_lettered_at IS NOT NULL AS dead_lettered, failed_at
     FROM messages
    WHERE failed_at IS NOT NULL AND delivered_at IS NULL AND read_at IS NULL
    ORDER BY failed_at DESC
    LIMIT 100)
  UNION ALL
  (SELECT id, client, status, last_error_code, last_error, attempts, false, updated_at
     FROM messages
    WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
      AND status IN ('accepted', 'scheduled', 'sent')
    ORDER BY id DESC
    LIMIT 100)
) failures
 ORDER BY failed_at DESC NULLS LAST
 LIMIT 100;

-- CREATE OR REPLACE keeps a view's options; said again so it reads here.
ALTER VIEW recent_failures SET (security_barrier = true);
