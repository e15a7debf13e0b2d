-- Every statement is planned for its parameters and the tables as they are
-- now. Postgres' default keeps a prepared statement's generic plan once it
-- looks no worse, and a plan made while `messages` was nearly empty scans the
-- whole table for every event of a batch. The store asked for this with a
-- connection option, which a pooler in front of Postgres (PgBouncer before
-- 1.20) refuses: it is the database's default instead, for new sessions.
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan', current_database());
END
$$;
