-- Messages by phone number, newest first (issue 15): the dashboard's lookup
-- ("a customer calls") and the routing of a reply to the client that last
-- wrote to that number. Plain CREATE INDEX, inside the migration's
-- transaction, so writes to messages wait while it builds: on a large
-- table build it by hand first with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_phone_number ON messages (phone_number, created_at DESC);
-- and this statement is then a no-op.
CREATE INDEX IF NOT EXISTS messages_phone_number ON messages (phone_number, created_at DESC);
