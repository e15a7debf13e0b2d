-- The wake (migration 20261217000000) read the whole inbox on every
-- acceptance. Its plans are generic and kept for the session, and the plan
-- of its second statement, made when a worker first called it, while the
-- inbox was small, was a sequential scan of `webhook_inbox`, kept as the
-- inbox grew (no analyze came to invalidate it: this machine runs
-- Postgres without autovacuum, and a production one may lag): in a loop
-- run at 300 operations a second, 10 ms and 2,300 buffers an acceptance,
-- a quarter of Postgres' time, to wake nothing in 96% of the calls.
--
-- Now the inbox is written only when an event was woken, and that
-- statement is planned when it runs (EXECUTE), for the inbox as it is
-- then: a probe of its key. The queue's own statement keeps its generic
-- plan, made while the queue may be empty, so it may not scan the table:
-- it probes `webhook_inbox_queue_waiting` whatever the ids and the queue.
CREATE OR REPLACE FUNCTION webhook_inbox_wake(sent_ids text[]) RETURNS bigint
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
  due bigint[];
  woken bigint;
BEGIN
  WITH d AS (
    UPDATE webhook_inbox_queue SET waiting_for = NULL, next_attempt_at = now()
     WHERE waiting_for = ANY (sent_ids)
    RETURNING id
  )
  SELECT array_agg(id) INTO due FROM d;
  IF due IS NULL THEN
    RETURN 0;
  END IF;
  EXECUTE 'UPDATE webhook_inbox SET state = ''pending'' WHERE id = ANY ($1)' USING due;
  GET DIAGNOSTICS woken = ROW_COUNT;
  IF woken > 0 THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN woken;
END
$$;

-- The claim walks the queue's due index in its order. Planned for a queue
-- Postgres has no statistics for, it was a bitmap scan and a sort: a bitmap
-- scan visits the heap for every entry the index has, and every event ever
-- queued and finished leaves a dead one until vacuum comes (22 ms and 470
-- buffers to claim nothing with 22,000 of them). A plain index scan marks
-- the dead entries it meets (LP_DEAD, once no transaction can see their
-- rows, as a vacuum would need too), and later scans pass them without
-- reading the heap: the statement is a function that allows no other scan.
CREATE FUNCTION webhook_inbox_claim(n bigint, lease interval)
RETURNS TABLE (id bigint, provider text, event_id text, event_type text, body bytea,
               attempts integer, received_at timestamptz)
LANGUAGE sql SET enable_bitmapscan = off SET enable_seqscan = off AS $$
  WITH claimed AS (
    UPDATE webhook_inbox_queue SET attempts = attempts + 1, leased_until = now() + lease
     WHERE id IN (SELECT id FROM webhook_inbox_queue
                   WHERE waiting_for IS NULL AND next_attempt_at <= now()
                     AND (leased_until IS NULL OR leased_until <= now())
                   ORDER BY next_attempt_at, id
                   LIMIT n FOR UPDATE SKIP LOCKED)
    RETURNING id, attempts
  )
  SELECT w.id, w.provider, w.event_id, w.event_type, w.body, c.attempts, w.received_at
    FROM claimed c JOIN webhook_inbox w ON w.id = c.id
$$;

-- The webhook's match by Sent id cannot be pruned to a week: each batch
-- planned it for every partition of `messages` (0.9 ms a batch, 6 s of
-- the 75 s Postgres spent in the same loop), for a plan that is the same
-- whatever the ids (the probe is per id, inside the lateral). Now its plan
-- is made once a session, and made again when a week is attached or
-- dropped (that invalidates it), and no sequential scan is allowed, so a
-- plan made while a week was empty still probes it when it is full.
-- Every column is qualified: `trace_context` is also an output column,
-- which plpgsql would find ambiguous.
CREATE FUNCTION messages_carrying(sent_ids text[])
RETURNS TABLE (sent_id text, message_id text, trace_context jsonb)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
BEGIN
  RETURN QUERY
    SELECT p.id, m.id, m.trace_context
      FROM unnest(sent_ids) AS p(id)
     CROSS JOIN LATERAL (SELECT w.id, w.trace_context FROM messages w
                          WHERE w.provider_message_ids @> ARRAY[p.id] AND cardinality(w.provider_message_ids) > 0
                         OFFSET 0) m;
END
$$;
