-- The worker's two statements per batch of sends, the start of attempts
-- and the guarded status change (which the acceptance and the inbox's
-- applies share), were planned for every batch: the database plans every
-- statement for its parameters (migration 20261209000030), and these two
-- CTEs with a week of `messages` took 0.4 and 0.7 ms to plan a call, a
-- third of their time and a tenth of the machine's CPU in a drain
-- (pg_stat_statements, 2026-12-06). As functions, their plans are made
-- once a session (and again when a week is attached or dropped, which
-- invalidates them), the way messages_carrying's is (20261218000000).
--
-- A plan made once cannot be pruned to the weeks of the ids it is given
-- (Postgres prunes partitions by `id = ANY ($1)` only when the array is a
-- constant): it would probe the key of every week for every id. The
-- smallest and largest id bound the statements too, and those Postgres
-- prunes by when the plan starts, to the weeks between them (a batch's
-- messages are days apart at most). No sequential scan is allowed: a
-- plan made while a week was empty still probes it when it is full.

-- Store::begin_attempts: the messages still waiting to be sent are locked
-- in id order (concurrent batches cannot deadlock), move to `sending` and
-- get their timeline event; the rows come back as they are now.
CREATE FUNCTION messages_begin_attempts(ids text[]) RETURNS SETOF messages
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  lo text;
  hi text;
BEGIN
  SELECT min(i), max(i) INTO lo, hi FROM unnest(ids) i;
  RETURN QUERY
    WITH locked AS (
      SELECT l.id AS locked_id, l.status AS prev_status FROM messages l
       WHERE l.id = ANY (ids) AND l.id BETWEEN lo AND hi
       ORDER BY l.id FOR UPDATE
    ), updated AS (
      UPDATE messages m
         SET status = 'sending', attempts = m.attempts + 1, updated_at = now(),
             sending_at = coalesce(m.sending_at, now()), next_attempt_at = NULL
        FROM locked
       WHERE m.id = locked_id AND m.id = ANY (ids) AND m.id BETWEEN lo AND hi
         AND (m.status IN ('queued', 'sending') OR (m.status = 'scheduled' AND m.accepted_at IS NULL))
      RETURNING m AS message, prev_status
    ), event AS (
      INSERT INTO message_events (message_id, status, source, attempt, client, prev_status)
      SELECT (u.message).id, 'sending', 'worker', (u.message).attempts, (u.message).client, u.prev_status
        FROM updated u
    )
    SELECT (u.message).* FROM updated u;
END
$$;

-- Store::apply_distinct: changes of distinct messages, one row of each
-- array per message. `prev` locks the messages in id order and reads their
-- status as of the lock; a change applies when it ranks above it.
-- `updated` writes the applied changes, and Sent's ids of acceptances
-- (`sent_ids`, a JSON array, or NULL for any other change) whether applied
-- or not; every row gets its timeline event; applied changes of messages
-- with a `callback_url` get their callback row. `prev` carries the
-- message's client and status before the change, which the event stores
-- for the dashboard's readers (20261213000000); `updated` returns its
-- `prev` row with the callback URL, so the callback needs no join. Webhook
-- events that arrived before the Sent ids stored here wait for them in the
-- inbox's queue: the same statement makes them due (an uncorrelated
-- subquery runs once, after `updated`; with no Sent ids it wakes nothing
-- and reads one empty index page). Each row comes back with whether it
-- applied; a message that does not exist does not come back.
CREATE FUNCTION messages_apply(
  ids text[], statuses text[], sources text[], attempt_numbers int[], details jsonb[],
  error_codes text[], errors text[], ats timestamptz[], events text[], sent_ids jsonb[]
) RETURNS TABLE (changed_id text, advanced boolean, woken bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  lo text;
  hi text;
BEGIN
  SELECT min(i), max(i) INTO lo, hi FROM unnest(ids) i;
  RETURN QUERY
    WITH input AS (
      SELECT u.*, CASE WHEN u.provider_json IS NOT NULL
                       THEN ARRAY(SELECT jsonb_array_elements_text(u.provider_json)) END AS provider_ids
        FROM unnest(ids, statuses, sources, attempt_numbers, details, error_codes, errors, ats, events, sent_ids)
               AS u(id, status, source, attempt, detail, error_code, error, at, event, provider_json)
    ), prev AS (
      SELECT i.*, m.client, m.status AS previous_status,
             status_rank(i.status) > status_rank(m.status) AS advance
        FROM messages m JOIN input i ON i.id = m.id
       WHERE m.id = ANY (ids) AND m.id BETWEEN lo AND hi
       ORDER BY m.id
         FOR UPDATE OF m
    ), updated AS (
      UPDATE messages m
         SET status = CASE WHEN p.advance THEN p.status ELSE m.status END,
             updated_at = CASE WHEN p.advance THEN now() ELSE m.updated_at END,
             provider_message_ids = coalesce(p.provider_ids, m.provider_message_ids),
             provider_message_id = CASE WHEN p.provider_ids IS NULL THEN m.provider_message_id
                                        ELSE p.provider_ids[1] END,
             last_error_code = CASE WHEN p.advance AND p.error_code IS NOT NULL THEN p.error_code
                                    WHEN p.provider_ids IS NOT NULL THEN NULL
                                    ELSE m.last_error_code END,
             last_error = CASE WHEN p.advance AND p.error IS NOT NULL THEN p.error
                               WHEN p.provider_ids IS NOT NULL THEN NULL
                               ELSE m.last_error END,
             accepted_at  = CASE WHEN p.advance AND p.status = 'accepted'
                                 THEN coalesce(m.accepted_at, p.at) ELSE m.accepted_at END,
             sent_at      = CASE WHEN p.advance AND p.status = 'sent'
                                 THEN coalesce(m.sent_at, p.at) ELSE m.sent_at END,
             delivered_at = CASE WHEN p.advance AND p.status = 'delivered'
                                 THEN coalesce(m.delivered_at, p.at) ELSE m.delivered_at END,
             read_at      = CASE WHEN p.advance AND p.status = 'read'
                                 THEN coalesce(m.read_at, p.at) ELSE m.read_at END,
             failed_at    = CASE WHEN p.advance AND p.status IN ('failed', 'blocked', 'filtered', 'cancelled')
                                 THEN coalesce(m.failed_at, p.at) ELSE m.failed_at END,
             dead_lettered_at = CASE WHEN p.advance AND p.event = 'dead_lettered'
                                     THEN now() ELSE m.dead_lettered_at END
        FROM prev p
       WHERE m.id = p.id AND m.id = ANY (ids) AND m.id BETWEEN lo AND hi
         AND (p.advance OR p.provider_ids IS NOT NULL)
      RETURNING m.callback_url, p.*
    ), event AS (
      INSERT INTO message_events (message_id, status, applied, source, attempt, detail, at, client, prev_status)
      SELECT p.id, coalesce(p.event, p.status), p.advance, p.source, p.attempt, p.detail, p.at, p.client,
             p.previous_status
        FROM prev p
    ), callback AS (
      INSERT INTO status_callbacks (message_id, client, url, status, previous_status, at, error_code, error, channel)
      SELECT u.id, u.client, u.callback_url, u.status, u.previous_status, u.at, u.error_code, u.error,
             u.detail ->> 'channel'
        FROM updated u
       WHERE u.advance AND u.callback_url IS NOT NULL
    )
    SELECT p.id, p.advance,
           (SELECT webhook_inbox_wake(ARRAY(SELECT unnest(u.provider_ids) FROM updated u)))
      FROM prev p;
END
$$;
