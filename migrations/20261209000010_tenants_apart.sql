-- Tenants apart (issue 12).
--
-- 1. A key's role: `tenant` (its own messages only; the default, so every
--    existing key stays one) or `admin` (the status page shows every
--    client's). A release before this one inserts keys without it: tenants.
ALTER TABLE api_keys
  ADD COLUMN role text NOT NULL DEFAULT 'tenant' CHECK (role IN ('tenant', 'admin'));

-- 2. Rotating a managed key's callback secret (`gateway keys rotate-secret`):
--    the secret it replaced keeps signing callbacks, beside the new one,
--    until previous_callback_secret_until, so receivers can move over.
ALTER TABLE api_keys
  ADD COLUMN previous_callback_secret text,
  ADD COLUMN previous_callback_secret_until timestamptz;

-- 3. Fair callback claims (Store::claim_callbacks): the clients with pending
--    callbacks are found by skipping through this index, one probe per
--    client, and each client's due callbacks are read from it in order, so
--    one client's backlog is never read to serve another's.
CREATE INDEX status_callbacks_client_due ON status_callbacks (client, next_attempt_at, id)
  WHERE state = 'pending';

-- 4. A tenant's status page lists its newest failures: without this index
--    that reads every client's failures (or every message of the tenant).
--    Only failed messages are in it, so sending does not pay for it. The
--    page's other numbers are bounded by time windows (or, for the counts
--    by status, read through messages_client_id) and cost a tenant no more
--    than they cost an admin.
CREATE INDEX messages_client_failed_at ON messages (client, failed_at DESC)
  WHERE failed_at IS NOT NULL;
