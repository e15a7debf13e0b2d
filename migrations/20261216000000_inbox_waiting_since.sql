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
-- The build takes a SHARE lock on the queue for as long as it reads it:
-- storing a webhook event, the inbox's claims and finishes, and acceptances
-- (their trigger wakes waiting events) wait. The queue holds only events with
-- work left (the backlog and the waiting ones): 56 ms at 200,000 rows here.
CREATE INDEX webhook_inbox_queue_waiting_since ON webhook_inbox_queue (next_attempt_at)
    WHERE waiting_for IS NOT NULL;
