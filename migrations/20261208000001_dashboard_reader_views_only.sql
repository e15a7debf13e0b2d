-- Dashboards read the documented views, never the tables.
--
-- 20261125000003 granted dashboard_reader (and so Grafana's login role, and
-- any role made IN ROLE dashboard_reader) SELECT on messages,
-- message_events and webhook_inbox as well: the phone numbers, template
-- parameters, callback URLs and webhook payloads of every client. Anyone who
-- could run a query through a dashboard tool could read them all.
--
-- From here on dashboard_reader holds SELECT on the five views and nothing
-- else in the schema. A view reads its tables with the rights of its owner
-- (the role that ran the migrations, which owns the tables), so the views
-- keep working without any grant on the tables.

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM dashboard_reader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM dashboard_reader;

GRANT SELECT ON message_status_counts, message_throughput_per_minute, delivery_latency_hourly,
      failure_reasons, recent_failures TO dashboard_reader;

-- The views that keep only some rows of messages (the last 7 days, the
-- failures) are security barriers: a condition the reader adds, such as a
-- cast that fails on certain values, is applied after the view's own, so
-- its errors cannot reveal rows the view leaves out. (Postgres still pushes
-- down leakproof conditions, such as comparisons of timestamps, so Grafana's
-- time filters stay as fast.) message_status_counts and
-- message_throughput_per_minute count every row and keep none out.
ALTER VIEW delivery_latency_hourly SET (security_barrier = true);
ALTER VIEW failure_reasons SET (security_barrier = true);
ALTER VIEW recent_failures SET (security_barrier = true);
