-- Fewer index entries per message in the outbox and the inbox (issue 13).
-- Each callback wrote an entry in every index of status_callbacks when
-- queued and again when finished, and each webhook event likewise in
-- webhook_inbox (bench/wal.sh prints the bytes each index took).

-- status_callbacks.webhook_id is made by gen_random_uuid() (122 random bits)
-- and never looked up: the unique index only proved what the generator
-- already guarantees, and its random keys touch a new page of the index for
-- nearly every callback (after each checkpoint, a full-page image).
ALTER TABLE status_callbacks DROP CONSTRAINT IF EXISTS status_callbacks_webhook_id_key;

-- The claim's "no earlier pending callback of the same message" probe reads
-- status_callbacks_message instead: a message has a handful of callbacks.
DROP INDEX IF EXISTS status_callbacks_message_pending;

-- An event's id is only ever compared for equality (the reused-id check at
-- insert, the operator's lookup): a hash index's entry is a 4-byte hash
-- instead of the provider's name and the id (about 55 bytes of WAL less
-- per entry, measured). The provider is checked on the row. Building it
-- reads the whole inbox under a SHARE lock (webhooks wait); on a large
-- inbox, build it first without blocking, and this does nothing:
--   CREATE INDEX CONCURRENTLY webhook_inbox_event_id_hash ON webhook_inbox USING hash (event_id);
CREATE INDEX IF NOT EXISTS webhook_inbox_event_id_hash ON webhook_inbox USING hash (event_id);
DROP INDEX IF EXISTS webhook_inbox_event_id;
