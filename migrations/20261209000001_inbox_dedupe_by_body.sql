-- A webhook delivery is a duplicate when its body is one already stored,
-- whatever its event id: a captured signed body replayed under a fresh
-- event id (the id header is not signed by every scheme) is caught. An
-- event id already seen with a different body is stored too, and flagged,
-- so that a guessed id cannot pre-empt the real event.
-- Computed by Postgres, so no writer can store a wrong one.
ALTER TABLE webhook_inbox ADD COLUMN body_sha256 bytea NOT NULL
    GENERATED ALWAYS AS (sha256(body)) STORED;
ALTER TABLE webhook_inbox ADD COLUMN event_id_reused boolean NOT NULL DEFAULT false;

-- Bodies stored twice before this rule (under two ids) are the same event:
-- the first stored stays.
DELETE FROM webhook_inbox a USING webhook_inbox b
 WHERE a.provider = b.provider AND a.body_sha256 = b.body_sha256 AND a.id > b.id;

ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_provider_event_id_key;
CREATE UNIQUE INDEX webhook_inbox_body ON webhook_inbox (provider, body_sha256);
CREATE INDEX webhook_inbox_event_id ON webhook_inbox (provider, event_id);
