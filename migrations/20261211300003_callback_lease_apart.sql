-- A claimed status callback's lease in a column of its own, as the inbox's
-- (20261211300002): the claim pushed `next_attempt_at` forward, which two of
-- the outbox's indexes hold, so every claim wrote a new entry in each of its
-- indexes. `leased_until` is in none: the claim is a HOT update.
-- `next_attempt_at` now only says when a callback is due (its retry time).
--
-- During a rolling upgrade a worker of the previous release may claim a
-- callback a new worker holds, and it is sent twice, with the same
-- `webhook-id`: receivers deduplicate on it, as at-least-once delivery asks.
ALTER TABLE status_callbacks ADD COLUMN leased_until timestamptz;
