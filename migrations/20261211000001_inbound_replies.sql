-- Replies to messages (issue 15): a `message.received` event from Sent is
-- routed by the worker to the tenant that last wrote to the contact's number,
-- recorded on its inbox row, readable with the pull API (`source=inbound`)
-- and delivered to the tenant's inbound URL as a signed `message.inbound`
-- callback through the status-callback outbox.

-- 1. Where each API key's replies go (`gateway keys create --inbound-url`,
--    `gateway keys set-inbound-url`); keys of API_KEYS take INBOUND_URLS.
ALTER TABLE api_keys ADD COLUMN inbound_url text;

-- Per-source pull grants (`gateway keys create --pull stripe,telegram`): the
-- provider sources a tenant key may read with the pull API (admins read all).
ALTER TABLE api_keys ADD COLUMN pull_sources text[] NOT NULL DEFAULT '{}';

-- 2. The routing, on the inbox row: `routed` to `reply_client` (the API key
--    name; `message_id` is then the message the reply answers), or
--    `unroutable` (no message to that number inside REPLY_WINDOW_DAYS).
--    `reply_xid` is the transaction that routed it: the pull API's
--    `inbound` feed is read in (reply_xid, id) order, only below the oldest
--    transaction still in flight, for the reason `webhook_inbox.commit_xid`
--    exists (20261210200000): a reply routed late must not sort before a
--    cursor already handed out. commit_xid cannot serve here, as routing
--    happens after the insert, in any order.
ALTER TABLE webhook_inbox
    ADD COLUMN reply_state text CHECK (reply_state IN ('routed', 'unroutable')),
    ADD COLUMN reply_client text,
    ADD COLUMN reply_xid xid8;

-- Only replies are in these (the rest of the inbox pays nothing). Plain
-- CREATE INDEX, inside the migration's transaction: on a large inbox build
-- them by hand first with CREATE INDEX CONCURRENTLY IF NOT EXISTS (same
-- definitions), and these statements are then no-ops.
CREATE INDEX IF NOT EXISTS webhook_inbox_replies ON webhook_inbox (reply_xid, id)
    WHERE reply_xid IS NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_inbox_replies_by_client ON webhook_inbox (reply_client, reply_xid, id)
    WHERE reply_xid IS NOT NULL;

-- 3. The outbox carries `message.inbound` callbacks beside status ones:
--    same claim (leases, per-client share, round-robin), signing (the
--    tenant's callback secret), attempts and retries. An inbound row has no
--    message_id (so it is never ordered behind a message's status
--    callbacks, nor read as one by `callbacks_for_message`) and no status;
--    it names its inbox row (deleted with it: retention, tenant purge) and
--    carries its whole body in `payload`.
--
--    A previous release's worker claims only rows it can join to a message,
--    so during a rolling deploy it skips inbound rows (at worst taking one
--    attempt of theirs per lease by claiming without delivering).
ALTER TABLE status_callbacks
    ADD COLUMN kind text NOT NULL DEFAULT 'status' CHECK (kind IN ('status', 'inbound')),
    ADD COLUMN inbox_id bigint REFERENCES webhook_inbox (id) ON DELETE CASCADE,
    ADD COLUMN payload jsonb,
    ALTER COLUMN message_id DROP NOT NULL,
    ALTER COLUMN status DROP NOT NULL;

-- Checked for new rows only (NOT VALID: no scan of the table under lock);
-- every existing row is a status callback with both columns set.
ALTER TABLE status_callbacks ADD CONSTRAINT status_callbacks_kind_columns CHECK (
    (kind = 'status' AND message_id IS NOT NULL AND status IS NOT NULL)
    OR (kind = 'inbound' AND inbox_id IS NOT NULL AND payload IS NOT NULL)
) NOT VALID;

-- One callback per reply (a re-processed inbox row does not queue a second),
-- and the index the inbox's cascade needs.
CREATE UNIQUE INDEX IF NOT EXISTS status_callbacks_inbox ON status_callbacks (inbox_id)
    WHERE inbox_id IS NOT NULL;
