-- Room on each page of the webhook inbox and the callback outbox for the
-- rows' next versions (issue 13: Postgres cost per message). Every event and
-- callback is written, then claimed, then finished: three versions of a row
-- within a second or so. When the new version lands on the same page,
-- Postgres logs only the bytes that changed instead of the whole row (for
-- the inbox, its body and headers). At fillfactor 50 the inbox's updates
-- went from 6,900 to 1,100 WAL bytes per message (bench/wal.sh; 75 gave
-- 4,000). The price is disk: these tables take up to twice the pages, for
-- rows their retention removes after days. Applies to pages written from
-- now on; the lock it takes blocks no reader or writer.
ALTER TABLE webhook_inbox SET (fillfactor = 50);
ALTER TABLE status_callbacks SET (fillfactor = 50);
