-- The status page's and Grafana's failure panels also show what went wrong
-- with a message Sent has, which is not a failure of the message: a 2xx
-- from Sent with no message id we could read (`sent_answer_without_id`: no
-- webhook can ever be matched to it), and a message Sent said nothing new
-- about after the last status poll (`sent_status_stale`). For those rows the
-- time is when the message last changed. The columns are unchanged, so
-- every reader of the views (and their grants) stays as it was.

CREATE INDEX messages_sent_anomalies ON messages (updated_at)
  WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale');

CREATE OR REPLACE VIEW failure_reasons AS
SELECT coalesce(last_error_code, 'unknown') AS error_code,
       status,
       count(*) AS messages,
       max(coalesce(failed_at, updated_at)) AS last_seen,
       (array_agg(last_error ORDER BY coalesce(failed_at, updated_at) DESC))[1] AS latest_error
  FROM messages
 WHERE (status IN ('failed', 'blocked', 'filtered', 'cancelled') AND failed_at > now() - interval '7 days')
    OR (last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
        AND status IN ('accepted', 'scheduled', 'sent') AND updated_at > now() - interval '7 days')
 GROUP BY 1, 2;

CREATE OR REPLACE VIEW recent_failures AS
SELECT * FROM (
  (SELECT id AS message_id, client, status, last_error_code, last_error, attempts,
          dead_lettered_at IS NOT NULL AS dead_lettered, failed_at
     FROM messages
    WHERE status IN ('failed', 'blocked', 'filtered', 'cancelled')
    ORDER BY failed_at DESC NULLS LAST
    LIMIT 100)
  UNION ALL
  (SELECT id, client, status, last_error_code, last_error, attempts, false, updated_at
     FROM messages
    WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
      AND status IN ('accepted', 'scheduled', 'sent')
    ORDER BY updated_at DESC
    LIMIT 100)
) failures
 ORDER BY failed_at DESC NULLS LAST
 LIMIT 100;
