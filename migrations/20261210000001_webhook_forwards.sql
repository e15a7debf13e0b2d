-- Forwarding of verified Stripe and Telegram events to the operator's own
-- services (issue 15). One row per (inbox event, destination), written by the
-- inbox processor; delivered by the worker like status callbacks: claimed as
-- a lease, every attempt recorded, retried with backoff, dead after
-- FORWARD_MAX_ATTEMPTS (re-driven by `worker redrive-forwards`).
CREATE TABLE webhook_forwards (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The provider's original body and headers stay in the inbox. An inbox
    -- row is purged INBOX_RETENTION_DAYS after it was processed, long after
    -- its forward gave up retrying; its forward goes with it.
    inbox_id         bigint NOT NULL REFERENCES webhook_inbox (id) ON DELETE CASCADE,
    source           text NOT NULL,                        -- stripe, telegram
    destination      text NOT NULL,                        -- destination name (FORWARD_<NAME>_URL)
    -- The Standard Webhooks `webhook-id`: the same on every attempt.
    webhook_id       text NOT NULL UNIQUE,
    -- The provider's order (Telegram's update_id): a destination receives
    -- rows with one in this order; NULL (Stripe, which promises no order)
    -- goes out concurrently.
    order_key        bigint,
    -- pending -> delivered | dead (attempts exhausted or refused; re-drivable)
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    UNIQUE (inbox_id, destination)
);

-- Due rows of one destination, in order.
CREATE INDEX webhook_forwards_due ON webhook_forwards (destination, next_attempt_at, id)
  WHERE state = 'pending';
-- The head of an ordered destination: its pending row with the lowest order_key.
CREATE INDEX webhook_forwards_ordered ON webhook_forwards (destination, order_key)
  WHERE state = 'pending' AND order_key IS NOT NULL;
CREATE INDEX webhook_forwards_dead ON webhook_forwards (destination, id) WHERE state = 'dead';

CREATE TABLE forward_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    forward_id  bigint NOT NULL REFERENCES webhook_forwards (id) ON DELETE CASCADE,
    attempt     int NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms int NOT NULL,
    status_code int,
    error       text
);

CREATE INDEX forward_attempts_forward ON forward_attempts (forward_id, id);

-- Workers wake on new forwards, as for callbacks.
CREATE FUNCTION webhook_forwards_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted) THEN
    PERFORM pg_notify('webhook_forwards', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER webhook_forwards_notify AFTER INSERT ON webhook_forwards
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION webhook_forwards_notify();
