-- Processing of the webhook inbox, and the status-callback outbox.
--
-- Wake-ups use LISTEN/NOTIFY on two channels, always sent from the
-- transaction that made the work visible (Postgres delivers them on commit):
--   webhook_inbox     new inbox rows, or unmatched rows whose message appeared
--   status_callbacks  new callback deliveries

-- Sent's message id an event is about, set by the worker when the event
-- waits for its message (state 'unmatched'), so the send record can find it.
ALTER TABLE webhook_inbox ADD COLUMN subject_id text;
-- Our message the event was applied to (state 'processed'), for audits.
ALTER TABLE webhook_inbox ADD COLUMN message_id text;

CREATE INDEX webhook_inbox_unmatched_subject ON webhook_inbox (subject_id) WHERE state = 'unmatched';

-- One notification per inserting statement that stored at least one row
-- (an all-duplicates insert stays silent).
CREATE FUNCTION webhook_inbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted) THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER webhook_inbox_notify AFTER INSERT ON webhook_inbox
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION webhook_inbox_notify();

-- When the send path stores Sent's ids for a message, events that arrived
-- before them (state 'unmatched') become due again at once. The partial
-- index keeps this a no-op probe while nothing is waiting.
CREATE FUNCTION webhook_inbox_rematch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE webhook_inbox SET state = 'pending', next_attempt_at = now()
   WHERE state = 'unmatched' AND subject_id = ANY (NEW.provider_message_ids);
  IF FOUND THEN
    PERFORM pg_notify('webhook_inbox', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER messages_provider_ids_rematch AFTER UPDATE OF provider_message_ids ON messages
  FOR EACH ROW
  WHEN (NEW.provider_message_ids IS DISTINCT FROM OLD.provider_message_ids
        AND cardinality(NEW.provider_message_ids) > 0)
  EXECUTE FUNCTION webhook_inbox_rematch();

-- A status change to POST to a message's callback_url (the outbox). Written
-- by the same statement that changes the status (Store::change_status), so a
-- change is never without its callback, nor a callback without its change.
CREATE TABLE status_callbacks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `webhook-id` of the delivery: the same on every attempt, so the client can deduplicate.
    webhook_id       text NOT NULL UNIQUE DEFAULT 'cb_' || replace(gen_random_uuid()::text, '-', ''),
    message_id       text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    client           text NOT NULL,                          -- API key name: whose secret signs it
    url              text NOT NULL,
    status           text NOT NULL,
    previous_status  text,
    at               timestamptz NOT NULL,                   -- when the change happened
    error_code       text,
    error            text,
    channel          text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- pending -> delivered | failed (attempts exhausted)
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code int,
    last_error       text,
    completed_at     timestamptz
);

CREATE INDEX status_callbacks_due ON status_callbacks (next_attempt_at) WHERE state = 'pending';
-- Callbacks of one message go out in order: the oldest pending one first.
CREATE INDEX status_callbacks_message_pending ON status_callbacks (message_id, id) WHERE state = 'pending';
CREATE INDEX status_callbacks_message ON status_callbacks (message_id, id);

-- Every delivery attempt and its outcome.
CREATE TABLE callback_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    callback_id  bigint NOT NULL REFERENCES status_callbacks (id) ON DELETE CASCADE,
    attempt      int NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  int NOT NULL,
    status_code  int,                                        -- NULL: no HTTP answer (timeout, refused, ...)
    error        text
);

CREATE INDEX callback_attempts_callback ON callback_attempts (callback_id, id);

CREATE FUNCTION status_callbacks_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted) THEN
    PERFORM pg_notify('status_callbacks', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER status_callbacks_notify AFTER INSERT ON status_callbacks
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION status_callbacks_notify();
