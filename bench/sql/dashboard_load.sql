-- bench/dashboard.sh: messages :first .. :last - 1 (psql variables) and
-- their timelines, generated in SQL, in one statement. 20 clients; created
-- over the last 30 days; by number: 80% delivered, 5% read, 4% failed, 1%
-- blocked, 1% cancelled, 3% sent, 2% accepted, 1% sending, the rest queued
-- (a queued one is recent); one in 100,000 carries a Sent anomaly. A
-- message has an event per status it went through (about 4.9), plus an
-- unapplied repeated webhook for every tenth delivered one: about 5 events
-- per message.
--
-- Ids are ULIDs, so messages and their events spread over the weekly
-- partitions as a running gateway's do: the ULID time is the creation time
-- moved 35 days on, because the migrations make partitions from the
-- current week onwards (older ids go to the one below them, as an upgraded
-- installation's history does). With -v legacy_ids=1 (bench/upgrade.sh,
-- before the tables are partitioned) they are the number, zero-padded. The
-- last 16 characters are the number either way.
\if :{?legacy_ids}
\set id_expr 'lpad(i::text, 26, ''0'')'
\else
\set id_expr 'ulid_time_prefix(c + interval ''35 days'') || lpad(i::text, 16, ''0'')'
\endif
WITH m AS (
INSERT INTO messages (id, client, phone_number, status, attempts, provider_message_id, provider_message_ids,
                      last_error_code, last_error, created_at, updated_at, sending_at, accepted_at, sent_at,
                      delivered_at, read_at, failed_at, dead_lettered_at)
SELECT :id_expr, 'client_' || (i % 20), '+14155550123', t.status,
       CASE WHEN t.status IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
       CASE WHEN t.accepted THEN 'sent_' || i END,
       CASE WHEN t.accepted THEN ARRAY['sent_' || i] ELSE '{}' END,
       CASE WHEN t.status IN ('failed', 'blocked') THEN 'code_' || (i % 7)
            WHEN i % 100000 = 92 THEN 'sent_status_stale' END,
       CASE WHEN t.status IN ('failed', 'blocked') THEN 'error ' || (i % 7)
            WHEN i % 100000 = 92 THEN 'no news' END,
       c, c + interval '10 seconds',
       CASE WHEN t.status NOT IN ('queued', 'cancelled') THEN c + interval '200 ms' END,
       CASE WHEN t.accepted THEN c + interval '1 second' * (0.5 + r) END,
       CASE WHEN t.status IN ('sent', 'delivered', 'read') THEN c + interval '1 second' * (2 + r) END,
       CASE WHEN t.status IN ('delivered', 'read') THEN c + interval '1 second' * (3 + 30 * r * r) END,
       CASE WHEN t.status = 'read' THEN c + interval '1 second' * (100 + 30 * r * r) END,
       CASE WHEN t.status IN ('failed', 'blocked', 'cancelled') THEN c + interval '1 second' * (5 + r) END,
       CASE WHEN t.status = 'failed' AND i % 2 = 0 THEN c + interval '1 second' * (5 + r) END
  FROM generate_series(:first, :last - 1) i
 CROSS JOIN LATERAL (SELECT random() + 0 * i AS r) rnd
 CROSS JOIN LATERAL (SELECT CASE WHEN i % 100 >= 97 THEN now() - interval '1 second' * (rnd.r * 300)
                                 ELSE now() - interval '30 days' * rnd.r END AS c) ct
 CROSS JOIN LATERAL (
   SELECT s AS status, s NOT IN ('queued', 'sending', 'cancelled') AS accepted
     FROM (SELECT CASE WHEN i % 100 < 80 THEN 'delivered' WHEN i % 100 < 85 THEN 'read'
                       WHEN i % 100 < 89 THEN 'failed' WHEN i % 100 < 90 THEN 'blocked'
                       WHEN i % 100 < 91 THEN 'cancelled' WHEN i % 100 < 94 THEN 'sent'
                       WHEN i % 100 < 96 THEN 'accepted' WHEN i % 100 < 97 THEN 'sending'
                       ELSE 'queued' END AS s) x) t
RETURNING *, right(id, 16)::bigint AS n
)

-- Each event carries the message's client and the status it left, as the
-- writers store them.
INSERT INTO message_events (message_id, status, applied, source, attempt, at, client, prev_status)
SELECT m.id, e.status, e.applied, e.source, e.attempt, e.at, m.client, e.prev
  FROM m
 CROSS JOIN LATERAL (
   SELECT v.*, lag(dashboard_status_of(v.status)) OVER (ORDER BY v.n) AS prev
     FROM (VALUES
       (1, 'queued', true, 'gateway', NULL::int, m.created_at),
       (2, 'sending', true, 'worker', 1, m.sending_at),
       (3, 'accepted', true, 'worker', 1, m.accepted_at),
       (4, 'sent', true, 'sent', NULL, m.sent_at),
       (5, 'delivered', true, 'sent', NULL, m.delivered_at),
       (6, 'delivered', false, 'sent', NULL, CASE WHEN m.n % 10 = 1 THEN m.delivered_at END),
       (7, 'read', true, 'sent', NULL, m.read_at),
       (8, CASE WHEN m.dead_lettered_at IS NOT NULL THEN 'dead_lettered' ELSE m.status END, true,
        CASE m.status WHEN 'cancelled' THEN 'gateway' WHEN 'failed' THEN 'worker' ELSE 'sent' END, NULL, m.failed_at)
     ) v(n, status, applied, source, attempt, at)
    WHERE v.at IS NOT NULL) e;
