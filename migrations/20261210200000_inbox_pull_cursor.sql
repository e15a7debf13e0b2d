-- The pull API (`GET /api/events`, issue 15) pages through the inbox with a
-- cursor that must never skip an event committed late. Identity values are
-- taken at insert and commit in any order, so "id > cursor" would skip a row
-- whose transaction took a lower id but committed after a page was read.
-- Instead each row records the id of the transaction that inserted it
-- (one per gateway group commit), and pages are read in (commit_xid, id)
-- order, only up to the oldest transaction still in flight
-- (pg_snapshot_xmin): every transaction below it has ended, so no row can
-- appear later below the cursor.
--
-- No default value at ADD COLUMN: a volatile default would rewrite the
-- table under an exclusive lock. Rows stored before this migration keep
-- NULL, read as transaction 0 (long committed).
ALTER TABLE webhook_inbox ADD COLUMN commit_xid xid8;
ALTER TABLE webhook_inbox ALTER COLUMN commit_xid SET DEFAULT pg_current_xact_id();

-- One index probe per page and source. Plain CREATE INDEX (inside the
-- migration's transaction); on a large inbox build it CONCURRENTLY by hand
-- first (same name), and this statement is then a no-op.
CREATE INDEX IF NOT EXISTS webhook_inbox_pull
    ON webhook_inbox (provider, (coalesce(commit_xid, '0'::xid8)), id);
