-- The periodic re-check of unmatched events (Store::rematch_inbox) looks only
-- at events that started waiting lately: the rematch trigger wakes every
-- other one when its message's Sent ids are stored, and misses only an event
-- set waiting in a transaction concurrent with that store. Read through this
-- index, a pass costs what started waiting since the last one, not a probe
-- of every week of `messages` for every waiting event (events for messages
-- this gateway never sent wait INBOX_UNMATCHED_TTL_SECS, a day by default).
-- `next_attempt_at` is when an event started waiting (the finish that sets
-- `waiting_for` sets it to now()).
--
-- The build locks the queue against writes (stores and finishes of webhook
-- events wait) for as long as it reads the queue: only events with work
-- left are in it, so at most a day's unmatched events.
CREATE INDEX webhook_inbox_queue_waiting_since ON webhook_inbox_queue (next_attempt_at)
    WHERE waiting_for IS NOT NULL;
