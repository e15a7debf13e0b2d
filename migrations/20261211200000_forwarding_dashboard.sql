-- Forwarding on the dashboards (issue 15): per source and destination, the
-- forwards received and delivered over the last 24 hours, and the backlog
-- now: pending, failing (pending, last attempt failed), dead, and the age of
-- the oldest pending one. The status page (`/dashboard/data`, admin keys
-- only), Grafana and psql read this one view, so they agree.
--
-- Cheap however large webhook_forwards grows (it keeps rows for the inbox's
-- retention): the window is counted from webhook_forwards_created, an index
-- on created_at that carries the columns counted, read index-only over the
-- last 24 hours' rows alone; the backlog through the partial indexes of
-- pending and dead rows (webhook_forwards_due, webhook_forwards_dead), which
-- hold only those. Plain CREATE INDEX, inside the migration's transaction,
-- so forwarding waits while it builds: on a large table build it by hand
-- first with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_forwards_created
--     ON webhook_forwards (created_at) INCLUDE (source, destination, state);
-- and this statement is then a no-op.
CREATE INDEX IF NOT EXISTS webhook_forwards_created
  ON webhook_forwards (created_at) INCLUDE (source, destination, state);

-- One row per (source, destination) with a forward in the window or a
-- backlog. Rows counted, never the events' bodies or URLs: no
-- security_barrier needed, a reader's condition sees nothing the columns do
-- not show.
CREATE VIEW forwarding_summary AS
WITH recent AS (
  SELECT source, destination, count(*) AS received, count(*) FILTER (WHERE state = 'delivered') AS forwarded
    FROM webhook_forwards
   WHERE created_at > now() - interval '24 hours'
   GROUP BY source, destination
), backlog AS (
  SELECT source, destination, count(*) AS pending, count(*) FILTER (WHERE last_error IS NOT NULL) AS failing,
         0::bigint AS dead, min(created_at) AS oldest_pending_at
    FROM webhook_forwards WHERE state = 'pending'
   GROUP BY source, destination
  UNION ALL
  SELECT source, destination, 0, 0, count(*), NULL
    FROM webhook_forwards WHERE state = 'dead'
   GROUP BY source, destination
), undelivered AS (
  SELECT source, destination, sum(pending)::bigint AS pending, sum(failing)::bigint AS failing,
         sum(dead)::bigint AS dead, min(oldest_pending_at) AS oldest_pending_at
    FROM backlog GROUP BY source, destination
)
SELECT source, destination,
       coalesce(r.received, 0) AS received_24h,
       coalesce(r.forwarded, 0) AS forwarded_24h,
       coalesce(u.pending, 0) AS pending,
       coalesce(u.failing, 0) AS failing,
       coalesce(u.dead, 0) AS dead,
       coalesce(extract(epoch FROM now() - u.oldest_pending_at), 0)::float8 AS oldest_pending_seconds
  FROM recent r FULL JOIN undelivered u USING (source, destination);

GRANT SELECT ON forwarding_summary TO dashboard_reader;
