-- Fewer index entries per message in the callback outbox (issue 13): each
-- callback wrote an entry in every index of status_callbacks when queued and
-- again when finished (bench/wal.sh prints the bytes each index took).
--
-- (A hash index for the inbox's event ids, 260 bytes less per message, was
-- tried and left out: every insert into a hash index updates its metapage,
-- so concurrent webhook inserts queue on it: under bench/load.sh at 150
-- operations/s the acknowledgement's p99 was 451 ms with it, 127 ms
-- without, one run each.)

-- status_callbacks.webhook_id is made by gen_random_uuid() (122 random bits)
-- and never looked up: the unique index only proved what the generator
-- already guarantees, and its random keys touch a new page of the index for
-- nearly every callback (after each checkpoint, a full-page image).
ALTER TABLE status_callbacks DROP CONSTRAINT IF EXISTS status_callbacks_webhook_id_key;

-- The claim's "no earlier pending callback of the same message" probe reads
-- status_callbacks_message instead: a message has a handful of callbacks.
DROP INDEX IF EXISTS status_callbacks_message_pending;
