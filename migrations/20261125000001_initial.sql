-- Messages, their timeline, API keys, idempotency records and the webhook inbox.
-- Column and status names are meant to be read directly by people pointing
-- Grafana, Metabase or psql at this database.

-- Progress rank of a status: the single rule for "never move backwards".
-- Mirrors MessageStatus::rank in common/src/domain/status.rs.
CREATE FUNCTION status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE status
    WHEN 'queued' THEN 0 WHEN 'scheduled' THEN 1 WHEN 'sending' THEN 2
    WHEN 'accepted' THEN 3 WHEN 'sent' THEN 4
    WHEN 'failed' THEN 5 WHEN 'blocked' THEN 5 WHEN 'filtered' THEN 5 WHEN 'cancelled' THEN 5
    WHEN 'delivered' THEN 6 WHEN 'read' THEN 7
  END
$$;

CREATE TABLE api_keys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    -- SHA-256 of the key; the key itself is shown once, at creation.
    key_hash        bytea NOT NULL UNIQUE,
    -- First characters of the key, to tell keys apart in listings.
    key_prefix      text NOT NULL,
    -- Secret that signs status callbacks to this client (Standard Webhooks).
    callback_secret text NOT NULL,
    -- Per-key override of RATELIMIT_MESSAGES, e.g. '1000/minute'.
    rate_limit      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

CREATE TABLE messages (
    id                   text PRIMARY KEY,                 -- ULID, our message id
    client               text NOT NULL,                    -- name of the API key that sent it
    idempotency_key      text,
    phone_number         text NOT NULL,
    template_id          text,
    template_name        text,
    parameters           jsonb NOT NULL DEFAULT '{}',
    channels             text[] NOT NULL DEFAULT '{}',
    scheduled_at         timestamptz,
    sandbox              boolean NOT NULL DEFAULT false,
    callback_url         text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    status               text NOT NULL DEFAULT 'queued' CHECK (status_rank(status) IS NOT NULL),
    attempts             int NOT NULL DEFAULT 0,
    provider_message_id  text,                             -- Sent's id of the first recipient/channel
    provider_message_ids text[] NOT NULL DEFAULT '{}',     -- one per channel Sent fanned out to
    last_error_code      text,
    last_error           text,
    next_attempt_at      timestamptz,
    dead_lettered_at     timestamptz,                      -- retries exhausted; re-drivable
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sending_at           timestamptz,
    accepted_at          timestamptz,
    sent_at              timestamptz,
    delivered_at         timestamptz,
    read_at              timestamptz,
    failed_at            timestamptz                       -- failed, blocked, filtered or cancelled
);

CREATE INDEX messages_client_id ON messages (client, id DESC);
CREATE INDEX messages_status_created ON messages (status, created_at);
CREATE INDEX messages_provider_ids ON messages USING gin (provider_message_ids);
CREATE INDEX messages_dead_lettered ON messages (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;

CREATE TABLE message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    status      text NOT NULL,
    -- Whether this event moved the message's status (false: out of order or repeated).
    applied     boolean NOT NULL DEFAULT true,
    source      text NOT NULL,                             -- gateway, worker, sent (webhook), operator
    attempt     int,
    detail      jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX message_events_message ON message_events (message_id, id);
CREATE INDEX message_events_at ON message_events (at);

-- A request with an Idempotency-Key: the first answer, replayed for repeats.
CREATE TABLE idempotency_records (
    client          text NOT NULL,
    idempotency_key text NOT NULL,
    route           text NOT NULL,
    request_hash    bytea NOT NULL,
    response_status int NOT NULL,
    response_body   jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (client, idempotency_key)
);

CREATE INDEX idempotency_records_expires ON idempotency_records (expires_at);

-- Every verified inbound webhook, stored before it is acknowledged.
CREATE TABLE webhook_inbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider       text NOT NULL,                          -- sent, stripe, telegram
    event_id       text NOT NULL,                          -- provider's event id: the dedup key
    event_type     text,
    headers        jsonb NOT NULL DEFAULT '{}',
    body           bytea NOT NULL,                         -- raw body as signed
    received_at    timestamptz NOT NULL DEFAULT now(),
    -- pending -> processed | not_applicable | unmatched (waiting for its message) | parked (poison)
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'processed', 'not_applicable', 'unmatched', 'parked')),
    attempts       int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error     text,
    processed_at   timestamptz,
    UNIQUE (provider, event_id)
);

CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_inbox_unmatched ON webhook_inbox (received_at) WHERE state = 'unmatched';
