-- Speaking the real Sent (issue 10).
--
-- 1. `scheduled` moves between `accepted` and `sent`. Sent holds a message it
--    has accepted when it carries `scheduled_at` or its recipient is inside
--    quiet hours, and reports that with `message.scheduled` after our
--    `accepted`: ranked below `accepted`, that report was dropped and the
--    message read `accepted` until it went out. A message the gateway itself
--    holds until its time is also `scheduled`; the worker's hand-off to
--    `sending` is the one move out of it that is not by rank (see
--    `Store::begin_attempts`). The relative order of every other status is
--    unchanged. Ranks are integers, so `sending` and `accepted` move down one.
CREATE OR REPLACE FUNCTION status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE status
    WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'accepted' THEN 2 WHEN 'scheduled' THEN 3
    WHEN 'sent' THEN 4
    WHEN 'failed' THEN 5 WHEN 'blocked' THEN 5 WHEN 'filtered' THEN 5 WHEN 'cancelled' THEN 5
    WHEN 'delivered' THEN 6 WHEN 'read' THEN 7
  END
$$;

-- 2. Free text and media, as Sent v3 takes them: a message has a template or
--    `text`; `media_urls` are https URLs for MMS.
ALTER TABLE messages
  ADD COLUMN text       text,
  ADD COLUMN media_urls text[] NOT NULL DEFAULT '{}';

-- 3. The status poll that covers lost webhooks: how many times the worker
--    has asked Sent (`GET /v3/messages/{id}`) about the message (at most
--    four, with growing gaps), and when it last did. The partial index holds
--    only messages still waiting for Sent's word and not yet given up on,
--    keyed by poll count and the time the next gap is measured from, so
--    finding the due ones stays cheap however large the table grows.
ALTER TABLE messages
  ADD COLUMN status_polls   smallint NOT NULL DEFAULT 0,
  ADD COLUMN last_polled_at timestamptz;
CREATE INDEX messages_status_poll_due ON messages (status_polls, (greatest(updated_at, last_polled_at)))
  WHERE status IN ('accepted', 'scheduled', 'sent') AND provider_message_id IS NOT NULL AND status_polls < 4;
