-- Views for dashboards (Grafana, Metabase, psql), and a read-only role that
-- can see them and the tables, and change nothing.

CREATE VIEW message_status_counts AS
SELECT status, count(*) AS messages
  FROM messages
 GROUP BY status;

-- Per minute, over the last 24 hours: messages created, accepted by Sent,
-- delivered and failed.
CREATE VIEW message_throughput_per_minute AS
WITH minutes AS (
  SELECT generate_series(date_trunc('minute', now() - interval '24 hours'), date_trunc('minute', now()),
                         interval '1 minute') AS minute
)
SELECT m.minute,
       (SELECT count(*) FROM messages WHERE created_at >= m.minute AND created_at < m.minute + interval '1 minute') AS created,
       (SELECT count(*) FROM messages WHERE accepted_at >= m.minute AND accepted_at < m.minute + interval '1 minute') AS accepted,
       (SELECT count(*) FROM messages WHERE delivered_at >= m.minute AND delivered_at < m.minute + interval '1 minute') AS delivered,
       (SELECT count(*) FROM messages WHERE failed_at >= m.minute AND failed_at < m.minute + interval '1 minute') AS failed
  FROM minutes m;

CREATE INDEX messages_accepted_at ON messages (accepted_at) WHERE accepted_at IS NOT NULL;
CREATE INDEX messages_delivered_at ON messages (delivered_at) WHERE delivered_at IS NOT NULL;
CREATE INDEX messages_failed_at ON messages (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX messages_created_at ON messages (created_at);

-- Seconds from our accept (queued) to Sent's accept, and from Sent's accept to
-- delivery, by hour of delivery, over the last 7 days.
CREATE VIEW delivery_latency_hourly AS
SELECT date_trunc('hour', delivered_at) AS hour,
       count(*) AS delivered,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p50_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p90_seconds,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p99_seconds,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS p50_queue_seconds
  FROM messages
 WHERE delivered_at > now() - interval '7 days' AND accepted_at IS NOT NULL
 GROUP BY 1;

-- Why messages failed, over the last 7 days.
CREATE VIEW failure_reasons AS
SELECT coalesce(last_error_code, 'unknown') AS error_code,
       status,
       count(*) AS messages,
       max(failed_at) AS last_seen,
       (array_agg(last_error ORDER BY failed_at DESC))[1] AS latest_error
  FROM messages
 WHERE status IN ('failed', 'blocked', 'filtered', 'cancelled') AND failed_at > now() - interval '7 days'
 GROUP BY 1, 2;

CREATE VIEW recent_failures AS
SELECT id AS message_id, client, status, last_error_code, last_error, attempts,
       dead_lettered_at IS NOT NULL AS dead_lettered, failed_at
  FROM messages
 WHERE status IN ('failed', 'blocked', 'filtered', 'cancelled')
 ORDER BY failed_at DESC NULLS LAST
 LIMIT 100;

-- Roles are per cluster: create once, grant per database.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dashboard_reader') THEN
    CREATE ROLE dashboard_reader NOLOGIN;
  END IF;
END $$;
GRANT USAGE ON SCHEMA public TO dashboard_reader;
GRANT SELECT ON messages, message_events, webhook_inbox, message_status_counts, message_throughput_per_minute,
      delivery_latency_hourly, failure_reasons, recent_failures TO dashboard_reader;
