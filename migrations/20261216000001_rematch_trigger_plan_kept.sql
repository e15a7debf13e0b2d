-- The rematch trigger runs for every message whose Sent ids are stored: once
-- per message sent. Its statement takes the ids as a parameter, so with the
-- database's plan_cache_mode (force_custom_plan, migration
-- 20261209000030) it was planned again for every row: 2.5 s of planning in
-- a drain of 40,000 messages (a sixth of Postgres' time there), for 0.15 s
-- of running. Its plan is the same whatever the ids (a probe of the waiting
-- index, then of the inbox's key), so the function keeps the plan it made
-- first in each session. Same body as in 20261214000000_inbox_queue_apart.
CREATE OR REPLACE FUNCTION webhook_inbox_rematch() RETURNS trigger
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
  WITH woken AS (
    UPDATE webhook_inbox_queue SET waiting_for = NULL, next_attempt_at = now()
     WHERE waiting_for = ANY (NEW.provider_message_ids)
    RETURNING id
  )
  UPDATE webhook_inbox SET state = 'pending' WHERE id = ANY (ARRAY(SELECT id FROM woken));
  IF FOUND THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN NULL;
END
$$;
