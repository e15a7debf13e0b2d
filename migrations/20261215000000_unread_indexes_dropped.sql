-- Three indexes go (issue 13: Postgres cost per message). bench/wal.sh
-- printed each at about 190 bytes of WAL per message: an entry for every
-- insert, and another for every update that is not HOT.
--
-- messages_created_at served the dashboard's first views, which counted
-- messages by time of creation; the rollups replaced them. The lookups by
-- phone number read messages_phone_number (phone_number, created_at DESC),
-- a client's list reads messages_client_id, and the messages' ids are
-- ULIDs, in order of creation already. Only dashboard_rollup_rebuild()
-- filters on created_at, once, beside legs that read every week of
-- messages anyway.
--
-- status_callbacks_due (next_attempt_at) WHERE pending is the outbox's
-- first claim index: the claim has read status_callbacks_client_due
-- (client, next_attempt_at, id) since callbacks were shared fairly among
-- tenants, and the backlog gauge counts the pending rows through it too.
--
-- status_callbacks_completed served the purge of finished callbacks past
-- their retention, which now walks the primary key in id order, as the
-- inbox's does (common/src/store/purge.rs).
--
-- Each DROP takes an exclusive lock on its table (and every partition) for
-- as long as it takes to remove the catalog entries and files: no scan.
DROP INDEX IF EXISTS messages_created_at;
DROP INDEX IF EXISTS status_callbacks_due;
DROP INDEX IF EXISTS status_callbacks_completed;
