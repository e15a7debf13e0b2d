-- The timeline's foreign keys go (issue 13: Postgres cost per message).
-- Each week's `message_events` partition referenced its `messages`
-- partition, so every event (seven per message) locked its message's row
-- FOR KEY SHARE: by bench/wal.sh, a lock record each, 380 bytes per message,
-- and a trigger's lookup per event.
--
-- The integrity the keys gave is kept by the writers, which every event
-- already goes through: each statement that writes an event locks or
-- inserts its message's row in the same statement (the accept, the status
-- changes, a cancel, a re-drive), and the status poll's record locks the row
-- FOR KEY SHARE itself (Store::record_poll). A message and its events leave
-- together: a week's two partitions are dropped together, a withdrawn
-- submission's messages and their events go in one statement
-- (Store::withdraw), and a tenant's purge locks its messages before
-- deleting their events, so no writer adds an event between the two
-- (Store::purge_tenant). Tests check that no event is left without its
-- message (common/tests/rollup.rs, common/tests/send_store.rs,
-- worker/tests/partitions.rs).
--
-- Both parents are locked first, in the order the writers lock them
-- (messages, then their events): each dropped key would otherwise lock an
-- events partition, then its messages partition, the reverse of an accept,
-- and one of the two would fail as a deadlock. Held for the catalog
-- changes only: no scan.
LOCK TABLE messages, message_events IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
  c record;
BEGIN
  FOR c IN SELECT conrelid::regclass AS rel, conname FROM pg_constraint
            WHERE contype = 'f'
              AND conrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'message_events'::regclass) LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.rel, c.conname);
  END LOOP;
END
$$;

-- As before (20261212000000_message_status_changes_hot.sql), without the key.
CREATE OR REPLACE FUNCTION message_partitions_ensure(upto timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  week timestamptz;
  lo text;
  hi text;
  m text;
  e text;
  created int := 0;
BEGIN
  SELECT max(p.upper_at) INTO week FROM message_partitions() p;
  week := coalesce(week, message_partition_week(now()));
  WHILE week <= upto LOOP
    lo := ulid_time_prefix(week);
    hi := ulid_time_prefix(week + interval '7 days');
    m := 'messages_p' || to_char(week AT TIME ZONE 'UTC', 'YYYYMMDD');
    e := 'message_events_p' || to_char(week AT TIME ZONE 'UTC', 'YYYYMMDD');
    EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                                     PRIMARY KEY (id)) WITH (fillfactor = 50)', m);
    EXECUTE format('CREATE TABLE %I (LIKE message_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                                     PRIMARY KEY (id))', e);
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', m, lo, hi);
    EXECUTE format('ALTER TABLE message_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', e, lo, hi);
    created := created + 1;
    week := week + interval '7 days';
  END LOOP;
  RETURN created;
END
$$;
