-- The rematch trigger runs for every message whose Sent ids are stored: once
-- per message sent. Its statement takes the ids as a parameter, so with the
-- database's plan_cache_mode (force_custom_plan, migration
-- 20261209000030) it was planned again for every row: 2.5 s of planning in
-- a drain of 40,000 messages (a sixth of Postgres' time there), for 0.15 s
-- of running. Its plan is the same whatever the ids (a probe of the waiting
-- index, then of the inbox's key), so the function keeps the plan it made
-- first in each session. A later CREATE OR REPLACE of the function must
-- say this again: it replaces the function's settings too.
ALTER FUNCTION webhook_inbox_rematch() SET plan_cache_mode = force_generic_plan;
