-- Retention and partitioning (issue 13): `messages` and `message_events`
-- become range-partitioned by the message's id, a week per partition, so
-- MESSAGE_RETENTION_DAYS is kept by dropping whole partitions, never by
-- deleting rows (worker/src/retention.rs, common/src/store/partitions.rs).
--
-- The key. A message id is a ULID: its first 10 characters encode the
-- millisecond it was created (Crockford base32, [0-9A-Z] only, so every
-- collation orders them as bytes), and ids sort by creation time. A
-- partition of `messages` holds the ids from the ULID prefix of a Monday
-- 00:00 UTC to that of the next one, so the primary key stays `id` and a
-- lookup by id reads one partition. `message_events` is partitioned by
-- `message_id` with the same bounds: a message's timeline is in the
-- partition of the same week as the message, and each events partition
-- keeps its foreign key to its own messages partition (ON DELETE CASCADE),
-- so Postgres still guarantees that every event has its message, and the
-- two are dropped together (a foreign key from the parent would forbid the
-- drop). Weekly rather than daily: queries that cannot prune (a webhook's
-- match by Sent's id, the status poll, the dashboard's failures) probe
-- every partition's index, about 14 at 90 days instead of 90; retention is
-- then kept to the week (a message goes between 90 and 97 days old).
--
-- Partitions are created ahead, 8 weeks of them, by this migration and by
-- the worker (at its start and every hour: worker/src/retention.rs), never
-- on the accept path; a worker stopped for less than 8 weeks leaves no
-- accept without its partition. There is no default partition: rows that
-- landed in one would have to be moved out under lock before their week's
-- partition could be created, and it would forbid DETACH ... CONCURRENTLY.
-- Creating a week attaches tables made apart, and dropping one detaches it
-- CONCURRENTLY first: neither takes a lock an accept waits for.
--
-- message_events.id: a partition may not own an identity column, so the
-- ids now come from the sequence message_events_id_seq, carrying on from
-- the identity; each events partition has its own primary key (id) (the
-- parent cannot: a unique index there must hold the partition key).
--
-- status_callbacks.message_id no longer has a foreign key (a key to the
-- partitioned parent would forbid dropping a partition): a callback is only
-- ever inserted by the statement that updates its message (row-locked), and
-- retention deletes a week's callbacks before it drops the week
-- (Store::drop_message_partition; worker/tests/retention.rs).
--
-- The upgrade, in this migration's one transaction: the existing tables are
-- renamed `messages_legacy` and `message_events_legacy` and attached as the
-- partitions of everything below the first Monday after now (they keep
-- their indexes, which are attached as the parents' own, their primary keys
-- and the key between them; nothing is rewritten or re-indexed; the views
-- on them are made again on the parents). ATTACH scans each once to check
-- the bound, under ACCESS EXCLUSIVE: accepts and status changes wait for
-- that long (bench/upgrade.sh: about 11 s at 10 million messages and 48
-- million events). Checked beforehand with bench/sql/upgrade_prestep.sql,
-- which blocks no writer, the bound needs no scan here.

-- The 10-character ULID prefix of a time (its milliseconds since the epoch,
-- Crockford base32), as in common/src/domain/ids.rs.
CREATE FUNCTION ulid_time_prefix(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                           ((ms >> (5 * (9 - i))) & 31)::int + 1, 1), '' ORDER BY i)
    FROM (SELECT floor(extract(epoch FROM t) * 1000)::bigint AS ms) m, generate_series(0, 9) i
$$;

-- The Monday 00:00 UTC that starts the week of `t`.
CREATE FUNCTION message_partition_week(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT date_trunc('week', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The partitions of `messages`, oldest first, with their bounds (NULL lower:
-- MINVALUE) and the time their upper bound stands for (every message in the
-- partition was created before it).
CREATE FUNCTION message_partitions()
RETURNS TABLE (name text, events text, lower_id text, upper_id text, upper_at timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT c.relname::text,
         replace(c.relname::text, 'messages_', 'message_events_'),
         substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$FROM \('([0-9A-Z]+)'\)$r$),
         b.upper_id,
         -- the upper bound's prefix back to a time (10 base32 digits: ms)
         to_timestamp((SELECT sum((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(b.upper_id, i, 1)) - 1)::numeric
                                  * (32::numeric ^ (10 - i)))
                         FROM generate_series(1, 10) i) / 1000)
    FROM pg_inherits h
    JOIN pg_class c ON c.oid = h.inhrelid
   CROSS JOIN LATERAL (SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$TO \('([0-9A-Z]+)'\)$r$) AS upper_id) b
   WHERE h.inhparent = 'messages'::regclass
   ORDER BY b.upper_id
$$;

-- Creates the weekly partitions (of both tables) after the last one, up to
-- the week of `upto`; returns how many weeks it created. Callers hold the
-- advisory lock of partition maintenance (Store::ensure_message_partitions).
-- Each week's tables are made apart, keys and all, then attached: ATTACH
-- takes SHARE UPDATE EXCLUSIVE on the parents, which no accept, status
-- change or read waits for (CREATE TABLE ... PARTITION OF would take ACCESS
-- EXCLUSIVE, and, the writers locking the two parents in either order,
-- deadlock with them).
CREATE FUNCTION message_partitions_ensure(upto timestamptz) RETURNS int
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
                                     PRIMARY KEY (id))', m);
    EXECUTE format('CREATE TABLE %I (LIKE message_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                                     PRIMARY KEY (id),
                                     FOREIGN KEY (message_id) REFERENCES %I (id) ON DELETE CASCADE)', e, m);
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', m, lo, hi);
    EXECUTE format('ALTER TABLE message_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', e, lo, hi);
    created := created + 1;
    week := week + interval '7 days';
  END LOOP;
  RETURN created;
END
$$;

DO $$
DECLARE
  bound text := ulid_time_prefix(message_partition_week(now()) + interval '7 days');
  r record;
  views text[] := '{}';
  indexes text[] := '{}';
  triggers text[] := '{}';
  stmt text;
  last_id bigint;
BEGIN
  -- Nothing else writes meanwhile.
  LOCK TABLE messages, message_events, status_callbacks IN ACCESS EXCLUSIVE MODE;

  -- The bound checked beforehand, if the operator did
  -- (bench/sql/upgrade_prestep.sql: validated CHECK constraints, which take
  -- no lock that writers wait for): then ATTACH reads no row.
  SELECT substring(pg_get_constraintdef(m.oid) FROM $r$'([0-9A-Z]{10})'$r$) INTO r
    FROM pg_constraint m
    JOIN pg_constraint e ON e.conname = 'message_events_partition_bound' AND e.convalidated
                        AND e.conrelid = 'message_events'::regclass
                        AND pg_get_constraintdef(e.oid) = replace(pg_get_constraintdef(m.oid), '(id <', '(message_id <')
   WHERE m.conname = 'messages_partition_bound' AND m.convalidated AND m.conrelid = 'messages'::regclass;
  IF r.substring IS NOT NULL THEN
    bound := r.substring;
  END IF;

  -- Remember, by their text, the views, indexes and triggers on the two
  -- tables, to create them again on the parents: a view follows a renamed
  -- table, and a partitioned parent starts with nothing.
  -- (with their options: CREATE OR REPLACE VIEW resets those it is not
  -- given, and three of the dashboard's views are security barriers).
  FOR r IN SELECT DISTINCT v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS def,
                  coalesce(' WITH (' || array_to_string(v.reloptions, ', ') || ')', '') AS options
             FROM pg_depend d
             JOIN pg_rewrite w ON w.oid = d.objid
             JOIN pg_class v ON v.oid = w.ev_class
            WHERE d.refobjid IN ('messages'::regclass, 'message_events'::regclass)
              AND d.classid = 'pg_rewrite'::regclass AND v.relkind = 'v' LOOP
    views := views || format('CREATE OR REPLACE VIEW %s%s AS %s', r.name, r.options, r.def);
  END LOOP;
  FOR r IN SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def,
                  i.indrelid::regclass::text AS tab
             FROM pg_index i
            WHERE i.indrelid IN ('messages'::regclass, 'message_events'::regclass) AND NOT i.indisprimary LOOP
    indexes := indexes || r.def;
    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.name,
                   replace(r.name, r.tab || '_', r.tab || '_legacy_'));
  END LOOP;
  FOR r IN SELECT t.tgname, t.tgrelid::regclass::text AS tab, pg_get_triggerdef(t.oid) AS def
             FROM pg_trigger t
            WHERE t.tgrelid IN ('messages'::regclass, 'message_events'::regclass) AND NOT t.tgisinternal LOOP
    triggers := triggers || r.def;
    EXECUTE format('DROP TRIGGER %I ON %I', r.tgname, r.tab);
  END LOOP;

  ALTER TABLE status_callbacks DROP CONSTRAINT IF EXISTS status_callbacks_message_id_fkey;

  ALTER TABLE messages RENAME TO messages_legacy;
  ALTER INDEX messages_pkey RENAME TO messages_legacy_pkey;
  ALTER TABLE message_events RENAME TO message_events_legacy;
  ALTER INDEX message_events_pkey RENAME TO message_events_legacy_pkey;
  -- A partition may not own an identity column: the ids go on from a
  -- sequence of the parent's, where the identity's left off.
  SELECT coalesce(last_value, 0) INTO last_id FROM message_events_id_seq;
  ALTER TABLE message_events_legacy ALTER COLUMN id DROP IDENTITY;
  CREATE SEQUENCE message_events_id_seq AS bigint;
  PERFORM setval('message_events_id_seq', greatest(last_id, (SELECT coalesce(max(id), 0) FROM message_events_legacy), 1));

  CREATE TABLE messages (LIKE messages_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE,
                         PRIMARY KEY (id))
    PARTITION BY RANGE (id);
  CREATE TABLE message_events (LIKE message_events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
    PARTITION BY RANGE (message_id);
  ALTER TABLE message_events ALTER COLUMN id SET DEFAULT nextval('message_events_id_seq');
  ALTER SEQUENCE message_events_id_seq OWNED BY message_events.id;
  FOREACH stmt IN ARRAY indexes LOOP
    EXECUTE stmt;
  END LOOP;
  FOREACH stmt IN ARRAY triggers LOOP
    EXECUTE stmt;
  END LOOP;

  -- Each attach checks its bound in one scan of the table (no CHECK
  -- constraint first: adding one would scan it just the same) and attaches
  -- the legacy indexes as partitions of the parents' (same definitions).
  EXECUTE format('ALTER TABLE messages ATTACH PARTITION messages_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
  EXECUTE format('ALTER TABLE message_events ATTACH PARTITION message_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
                 bound);

  FOREACH stmt IN ARRAY views LOOP
    EXECUTE stmt;
  END LOOP;
END $$;

-- The weeks ahead.
SELECT message_partitions_ensure(now() + interval '8 weeks');
