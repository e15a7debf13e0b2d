-- The due forwards without an order (Stripe's), apart from the ordered ones
-- (Telegram's), so that a claim reads only rows it may take: with one index
-- for both, a destination whose every row is ordered had its whole backlog
-- walked on every claim (Store::claim_forwards). Plain CREATE INDEX, inside
-- the migration's transaction: forwards are few next to messages; on a large
-- installation create it first with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_forwards_unordered_due ON webhook_forwards
--     (destination, next_attempt_at, id) WHERE state = 'pending' AND order_key IS NULL;
CREATE INDEX IF NOT EXISTS webhook_forwards_unordered_due ON webhook_forwards (destination, next_attempt_at, id)
  WHERE state = 'pending' AND order_key IS NULL;
