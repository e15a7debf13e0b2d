-- The timeline's index by time had no reader left: timelines are read by
-- message (message_events_message) and the dashboard's rollups fold events
-- by id. It cost every status change an index entry (about 450 WAL bytes
-- per message, bench/wal.sh) and a tenth of the table's disk. Dropping the
-- partitioned index drops every partition's; it holds its lock only for the
-- catalog change.
DROP INDEX IF EXISTS message_events_at;
