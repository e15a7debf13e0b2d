-- The inbox's work queue in a narrow table of its own (issue 13: Postgres
-- cost per message). Finishing an event changed `state`, which the claim's
-- index (`webhook_inbox_due`), the purge's and the unmatched events' indexes
-- name in their conditions, so every finish was a non-HOT update: the wide
-- row again and a new entry in each of the inbox's five other indexes (by
-- bench/wal.sh, about 1.7 KB per message, four Sent webhooks each).
--
-- Now an event is in `webhook_inbox_queue` while it has work left (state
-- `pending` or `unmatched`): a row of its id, when it is due, its attempts
-- and lease, and the Sent id it waits for while unmatched. The insert
-- trigger queues every stored `pending` event; a claim updates the queue
-- row (a HOT update: no index of the queue names the attempts or the
-- lease); the finish deletes the row (or updates it, for a retry or an
-- event that waits) and writes the event's outcome into `webhook_inbox`
-- with a HOT update, as no index of the inbox names a column the finish
-- of a status event writes (a reply's routing writes `reply_xid`, which
-- the replies' own indexes name).
-- `webhook_inbox.state` stays what operators and the pull API read.
--
-- No foreign key from the queue to the inbox: checking it would lock the
-- event's row (a WAL record per event). The code keeps the two in step: the
-- trigger and a re-drive queue, and the statements that end an event's work
-- (its finish, its expiry while unmatched) delete its queue row in the same
-- statement. The events a tenant's purge deletes are finished ones (only a
-- finish names the message), so none is queued.
--
-- Upgrading: the previous release's workers claim through the columns
-- dropped here, so their claims fail (logged) until they are replaced;
-- nothing is lost, as every event with work left is moved into the queue
-- with its lease, and an event one of them was applying is claimed again
-- when the lease ends (applying is idempotent). The previous release's
-- gateways keep storing events (their insert names none of these columns).
-- The inbox is locked before the copy (EXCLUSIVE: reads pass, writes
-- wait), so no event is stored, finished or set waiting between the copy
-- and the new trigger: such an event would have no queue row, or one too
-- many. Writes wait from here, reads too from the first DROP INDEX, until
-- the commit.
CREATE TABLE webhook_inbox_queue (
    id bigint PRIMARY KEY,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Attempts including the current claim; also the claim's fencing token.
    attempts integer NOT NULL DEFAULT 0,
    leased_until timestamptz,
    -- Sent's message id an `unmatched` event waits for; NULL: due at
    -- `next_attempt_at`.
    waiting_for text
) WITH (fillfactor = 50);

CREATE INDEX webhook_inbox_queue_due ON webhook_inbox_queue (next_attempt_at, id)
    WHERE waiting_for IS NULL;
CREATE INDEX webhook_inbox_queue_waiting ON webhook_inbox_queue (waiting_for)
    WHERE waiting_for IS NOT NULL;

LOCK TABLE webhook_inbox IN EXCLUSIVE MODE;

INSERT INTO webhook_inbox_queue (id, next_attempt_at, attempts, leased_until, waiting_for)
SELECT id, next_attempt_at, attempts, leased_until,
       CASE WHEN state = 'unmatched' THEN coalesce(subject_id, '') END
  FROM webhook_inbox
 WHERE state IN ('pending', 'unmatched');

-- Finished events are purged in id order, the order they were received in
-- (common/src/store/purge.rs): no index names a time.
DROP INDEX webhook_inbox_due;
DROP INDEX webhook_inbox_finished;
DROP INDEX webhook_inbox_unmatched;
DROP INDEX webhook_inbox_unmatched_subject;
ALTER TABLE webhook_inbox DROP COLUMN next_attempt_at, DROP COLUMN leased_until;

-- Every stored pending event is queued, by whatever statement stored it,
-- and the workers are woken when it commits.
CREATE OR REPLACE FUNCTION webhook_inbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO webhook_inbox_queue (id) SELECT id FROM inserted WHERE state = 'pending';
  IF FOUND THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN NULL;
END
$$;

-- When the send path stores Sent's ids for a message, events that arrived
-- before them become due at once (one probe of the waiting index, which is
-- empty while nothing waits). The events are named as an array, so that
-- their update is a probe of the key: planned as a semi-join against the
-- woken rows, whose number Postgres cannot know, the update read the whole
-- inbox (bench/wal.sh with auto_explain: 18 ms an acceptance at 12,000
-- events).
CREATE OR REPLACE FUNCTION webhook_inbox_rematch() RETURNS trigger
LANGUAGE plpgsql AS $$
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
