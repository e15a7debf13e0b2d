-- Less planning and fewer trigger calls per message sent (issue 13). In a
-- drain profiled with perf, planning took a third of Postgres' CPU (the
-- worker's two statements are planned for each batch: migration
-- 20261209000030), and a trigger ran a function for every message.

-- 1. No constraint exclusion. Its default (`partition`) has the planner test
--    every partition a statement reaches against that partition's CHECK
--    constraints, here `status_rank(status) IS NOT NULL`, which can never
--    exclude one. Declarative partitions are pruned by their bounds, which
--    this setting does not touch. That test took 5.5% of Postgres' CPU in
--    the drain; without it, the acceptance plans in 1.65 ms instead of
--    1.90, the start of attempts in 0.85 instead of 1.14 (medians of 150
--    plannings each, alternating, 8 messages a batch). The database's
--    default, for new sessions, like `plan_cache_mode` (20261209000030).
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET constraint_exclusion = off', current_database());
END
$$;

-- 2. The rematch trigger goes: the statement that stores Sent's ids wakes
--    the events waiting for them itself, once per batch
--    (common/src/store/messages.rs, `apply_distinct`), where the trigger
--    ran a plpgsql function, with a setting to switch, for every message
--    sent (4% of Postgres' CPU in the drain). A worker of the previous
--    release still running during an upgrade stores ids without waking:
--    the periodic re-check finds those events, within
--    INBOX_REMATCH_INTERVAL_SECS when they started waiting in the last five
--    minutes, within ten minutes (the full re-check) otherwise. None is lost.
DROP TRIGGER messages_provider_ids_rematch ON messages;
DROP FUNCTION webhook_inbox_rematch();

-- What the trigger did, for the acceptance and the periodic re-check
-- (Store::rematch_inbox) alike: the events waiting for any of `sent_ids`
-- become due now and `pending`, and the workers are woken. Returns how
-- many. Its own statement takes a snapshot of its own, when called, so an
-- event that an inbox worker set waiting while the caller ran is woken too
-- (the trigger ran at the end of its statement for the same reason). The
-- events are named as an array, so that their update is a probe of the
-- key: planned as a semi-join against the woken rows, whose number
-- Postgres cannot know, the update read the whole inbox (bench/wal.sh with
-- auto_explain: 18 ms an acceptance at 12,000 events). Its plans are the
-- same whatever the ids, and kept for the session (migration
-- 20261216000001 says why that matters under the database's
-- force_custom_plan).
CREATE FUNCTION webhook_inbox_wake(sent_ids text[]) RETURNS bigint
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  woken bigint;
BEGIN
  WITH due AS (
    UPDATE webhook_inbox_queue SET waiting_for = NULL, next_attempt_at = now()
     WHERE waiting_for = ANY (sent_ids)
    RETURNING id
  )
  UPDATE webhook_inbox SET state = 'pending' WHERE id = ANY (ARRAY(SELECT id FROM due));
  GET DIAGNOSTICS woken = ROW_COUNT;
  IF woken > 0 THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN woken;
END
$$;
