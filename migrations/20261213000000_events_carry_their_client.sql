-- The dashboard's pending events cost the same at any size (issue 13).
--
-- Every reader of the dashboard adds up the events not yet folded into the
-- rollups itself (dashboard_pending_changes). For each one it looked up the
-- message (for its client) and the message's previous counted event (for
-- the status it left): two B-tree descents per event, a level deeper at 10
-- million messages than at 1 million, and pages that no longer fit the CPU's
-- caches (bench/dashboard.sh: 2-4x slower at 10 million).
--
-- The writers know both when they write the event: they hold the message's
-- row, locked, with its client and its status before the change. So every
-- counted event (applied, of a status the dashboard counts) now carries
-- them, and the pending events are one range scan of the timeline's tail.
-- The message is still read for the few the latency and failure rollups
-- need it for (a delivery: when it was created and accepted; a failure:
-- its error), and for events without a client, which the readers and the
-- next housekeeping step still fold as before: those written before this
-- migration, and those the previous release's processes write while a
-- rolling upgrade replaces them (so the fallback stays, not a backfill).
-- Unapplied events (polls, retries, repeated webhooks) need neither.
--
-- Adding nullable columns without a default changes only the catalog: no
-- rewrite, and the lock it takes (ACCESS EXCLUSIVE on message_events and
-- its partitions) lasts milliseconds. New weekly partitions copy the
-- columns (LIKE message_events). They cost about 1% more WAL per message
-- (bench/wal.sh).
ALTER TABLE message_events ADD COLUMN client text, ADD COLUMN prev_status text;

CREATE OR REPLACE FUNCTION dashboard_pending_changes(upto bigint DEFAULT NULL)
RETURNS TABLE (id bigint, client text, at timestamptz, status text, prev text, created_at timestamptz,
               accepted_at timestamptz, last_error_code text, last_error text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp ROWS 2000 AS $$
DECLARE
  done bigint;
BEGIN
  SELECT r.done_id INTO done FROM dashboard_rollup_state r;
  -- The LIMIT 1 keeps each lateral a per-event probe behind its condition
  -- (without it Postgres may flatten it into a join and read the whole
  -- table to hash it).
  RETURN QUERY EXECUTE format(
    'SELECT e.id, coalesce(e.client, m.client), e.at, dashboard_status_of(e.status),
            CASE WHEN e.client IS NULL THEN p.prev ELSE e.prev_status END,
            m.created_at, m.accepted_at, m.last_error_code, m.last_error
       FROM message_events e
       LEFT JOIN LATERAL (
            SELECT m.client, m.created_at, m.accepted_at, m.last_error_code, m.last_error
              FROM messages m
             WHERE m.id = e.message_id
               AND (e.client IS NULL
                    OR dashboard_status_of(e.status) IN (''delivered'', ''failed'', ''blocked'', ''filtered'', ''cancelled''))
             LIMIT 1) m ON true
       LEFT JOIN LATERAL (
            SELECT dashboard_status_of(p.status) AS prev
              FROM message_events p
             WHERE e.client IS NULL AND p.message_id = e.message_id AND p.id < e.id AND p.applied
               AND dashboard_status_of(p.status) IS NOT NULL
             ORDER BY p.id DESC
             LIMIT 1) p ON true
      WHERE e.id > %s AND e.id <= %s AND e.applied AND dashboard_status_of(e.status) IS NOT NULL
        AND (e.client IS NOT NULL OR m.client IS NOT NULL)',
    coalesce(done, 0), coalesce(upto, 9223372036854775807));
END
$$;
