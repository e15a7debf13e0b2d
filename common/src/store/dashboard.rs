//! The numbers of the built-in status page (`GET /dashboard/data`): the
//! dashboard views' definitions (migrations/20261210100000_dashboard_rollups.sql),
//! so the page, Grafana and psql all show the same thing, with an optional
//! filter on the client, so a tenant's key sees its own; and the worker's
//! housekeeping step that keeps their rollups ([`Store::roll_up_dashboard`]).
//! For an operator's view (no client filter) also forwarding, as the view
//! `forwarding_summary` counts it (migrations/20261211200000_forwarding_dashboard.sql).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Reader, Store};
use crate::domain::Provider;

/// Minutes of throughput shown, the current one included.
pub const THROUGHPUT_MINUTES: i32 = 60;
/// Failures listed, newest first.
pub const RECENT_FAILURES: i64 = 20;
/// Failure reasons listed, most frequent first.
pub const FAILURE_REASONS: i64 = 20;
/// Window of the delivery latency percentiles.
pub const LATENCY_WINDOW_HOURS: i32 = 24;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StatusCount {
    pub status: String,
    pub messages: i64,
}

/// One minute of `message_throughput_per_minute`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThroughputMinute {
    pub minute: DateTime<Utc>,
    /// Messages accepted by the gateway.
    pub created: i64,
    /// Messages Sent accepted.
    pub accepted: i64,
    pub delivered: i64,
    /// Messages that failed, were blocked, filtered or cancelled.
    pub failed: i64,
}

/// Seconds from Sent's accept to delivery (as `delivery_latency_hourly`), over
/// the last [`LATENCY_WINDOW_HOURS`]; `None` while nothing was delivered.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryLatency {
    pub delivered: i64,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Median seconds from our accept (queued) to Sent's accept.
    pub p50_queue_seconds: Option<f64>,
}

/// One row of `failure_reasons` (last 7 days).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureReason {
    /// Sent's error code, or ours (`unknown` when none was recorded).
    pub error_code: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::domain::MessageStatus))]
    pub status: String,
    pub messages: i64,
    pub last_seen: Option<DateTime<Utc>>,
    pub latest_error: Option<String>,
}

/// One row of `recent_failures`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecentFailure {
    pub message_id: String,
    /// The API key's name that sent it.
    pub client: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::domain::MessageStatus))]
    pub status: String,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub attempts: i32,
    pub dead_lettered: bool,
    pub failed_at: Option<DateTime<Utc>>,
}

/// One row of `forwarding_summary`: forwarding of one source to one
/// destination (`FORWARD_<NAME>_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForwardingSummary {
    /// The provider the events came from: `stripe` or `telegram`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "stripe"))]
    pub source: Provider,
    pub destination: String,
    /// Verified events queued for this destination over the last 24 hours.
    pub received_24h: i64,
    /// Of those, the ones delivered (the destination answered 2xx).
    pub forwarded_24h: i64,
    /// Waiting now, of any age: due, in flight, or waiting for a retry.
    pub pending: i64,
    /// Of the pending, those whose last attempt failed.
    pub failing: i64,
    /// Dead-lettered (attempts exhausted or refused): `worker redrive-forwards` sends them again.
    pub dead: i64,
    /// Age of the oldest pending forward in seconds (0 when none).
    pub oldest_pending_seconds: f64,
}

/// The forwarding rows, as the view has them, in source and destination order.
const FORWARDING_SQL: &str =
    "SELECT source, destination, received_24h, forwarded_24h, pending, failing, dead,
        oldest_pending_seconds
   FROM forwarding_summary ORDER BY source, destination";

#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSnapshot {
    pub generated_at: DateTime<Utc>,
    /// Every status that has messages, in status order.
    pub status_counts: Vec<StatusCount>,
    /// Oldest minute first, [`THROUGHPUT_MINUTES`] of them.
    pub throughput: Vec<ThroughputMinute>,
    pub latency: DeliveryLatency,
    pub failure_reasons: Vec<FailureReason>,
    pub recent_failures: Vec<RecentFailure>,
    /// Per source and destination with forwards: of every client's view
    /// only (`None` for a tenant's: forwarding is the operator's).
    pub forwarding: Option<Vec<ForwardingSummary>>,
}

/// Up to this many deliveries in the latency window (of every client), the
/// percentiles are exact, read from `messages` through
/// `messages_delivered_at`; above it they are interpolated from the hourly
/// histograms of `dashboard_latency`, whose cost does not grow with traffic.
pub const LATENCY_EXACT_UP_TO: i64 = 10_000;
/// Events one housekeeping step folds into the rollups at most.
pub const ROLLUP_BATCH: i64 = 100_000;
/// Rows of minutes, latencies and failures are kept this long (the views show 7 days).
const ROLLUP_KEEP_DAYS: i32 = 8;

/// Messages of one client only, or of every client (`None`). In SQL, as
/// `$1::text IS NULL OR client = $1`: every statement is planned for its
/// parameters (`Store::connect_lazy`), so the planner drops whichever side
/// does not apply.
const OF_CLIENT: &str = "($1::text IS NULL OR client = $1)";
/// The rollups' rows of one client, or their rows of every client at once
/// (client `''`).
const ROLLED_UP: &str = "client = coalesce($1::text, '')";
/// The failure statuses.
const FAILED: &str = "('failed', 'blocked', 'filtered', 'cancelled')";

/// The status page's statements, by name, as the page runs them: `$1` is the
/// client (NULL for every client), `$2` the number given with each. Public
/// so that `bench/dashboard.sh` times exactly these (`cargo run --example
/// dashboard_sql`).
pub fn page_queries() -> Vec<(&'static str, String, Option<i64>)> {
    vec![
        ("status_counts", status_counts_sql(), None),
        (
            "throughput",
            throughput_sql(),
            Some(THROUGHPUT_MINUTES.into()),
        ),
        ("latency", latency_sql(), Some(LATENCY_WINDOW_HOURS.into())),
        (
            "failure_reasons",
            failure_reasons_sql(),
            Some(FAILURE_REASONS),
        ),
        (
            "recent_failures",
            recent_failures_sql(),
            Some(RECENT_FAILURES),
        ),
    ]
}

/// Messages currently in each status: the rollup, plus the events not yet
/// folded in (+1 into their status, -1 out of the one before).
fn status_counts_sql() -> String {
    format!(
        "WITH pending AS MATERIALIZED (SELECT status, prev FROM dashboard_pending_changes() WHERE {OF_CLIENT})
         SELECT status, sum(messages)::bigint AS messages
           FROM (SELECT status, messages FROM dashboard_status_counts WHERE {ROLLED_UP}
                 UNION ALL SELECT status, 1 FROM pending
                 UNION ALL SELECT prev, -1 FROM pending WHERE prev IS NOT NULL) c
          GROUP BY status
         HAVING sum(messages) <> 0
          ORDER BY status_rank(status), status"
    )
}

/// `$2` minutes, the current one included, as `message_throughput_per_minute`.
fn throughput_sql() -> String {
    format!(
        "WITH minutes AS (
           SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $2::int - 1),
                                  date_trunc('minute', now()), interval '1 minute') AS minute
         ), counted AS (
           SELECT minute, sum(created) AS created, sum(accepted) AS accepted, sum(delivered) AS delivered,
                  sum(failed) AS failed
             FROM (SELECT minute, created, accepted, delivered, failed FROM dashboard_minutes
                    WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $2::int - 1)
                      AND {ROLLED_UP}
                   UNION ALL
                   SELECT date_trunc('minute', at), (prev IS NULL)::int, (status = 'accepted')::int,
                          (status = 'delivered')::int, (status IN {FAILED})::int
                     FROM dashboard_pending_changes() WHERE {OF_CLIENT}) r
            GROUP BY minute
         )
         SELECT m.minute, coalesce(c.created, 0)::bigint AS created, coalesce(c.accepted, 0)::bigint AS accepted,
                coalesce(c.delivered, 0)::bigint AS delivered, coalesce(c.failed, 0)::bigint AS failed
           FROM minutes m LEFT JOIN counted c USING (minute)
          ORDER BY m.minute"
    )
}

/// The latency histograms of the last `$2` hours (to the hour), of the
/// client, and how many deliveries every client had in them
/// (`everyone_delivered`, which decides whether the exact percentiles are
/// affordable).
fn latency_sql() -> String {
    format!(
        "WITH b AS (
           SELECT client, false AS pending, kind, bucket, messages FROM dashboard_latency
            WHERE hour >= date_trunc('hour', now() - make_interval(hours => $2::int))
              AND client IN (coalesce($1::text, ''), '')
           UNION ALL
           SELECT p.client, true, k.kind, dashboard_latency_bucket(k.seconds), 1
             FROM dashboard_pending_changes() p
            CROSS JOIN LATERAL (VALUES ('delivery', extract(epoch FROM p.at - p.accepted_at)::float8),
                                       ('queue', extract(epoch FROM p.accepted_at - p.created_at)::float8))
                       k(kind, seconds)
            WHERE p.status = 'delivered' AND p.accepted_at IS NOT NULL
              AND p.at > now() - make_interval(hours => $2::int)
         ), mine AS (
           SELECT kind, bucket, sum(messages)::bigint AS messages FROM b
            WHERE CASE WHEN pending THEN {OF_CLIENT} ELSE {ROLLED_UP} END
            GROUP BY 1, 2
         ), h AS (
           SELECT kind, array_agg(bucket ORDER BY bucket) AS buckets, array_agg(messages ORDER BY bucket) AS counts,
                  sum(messages)::bigint AS messages
             FROM mine GROUP BY kind
         )
         SELECT coalesce((SELECT messages FROM h WHERE kind = 'delivery'), 0) AS delivered,
                (SELECT dashboard_percentile(0.5, buckets, counts) FROM h WHERE kind = 'delivery') AS p50_seconds,
                (SELECT dashboard_percentile(0.9, buckets, counts) FROM h WHERE kind = 'delivery') AS p90_seconds,
                (SELECT dashboard_percentile(0.99, buckets, counts) FROM h WHERE kind = 'delivery') AS p99_seconds,
                (SELECT dashboard_percentile(0.5, buckets, counts) FROM h WHERE kind = 'queue') AS p50_queue_seconds,
                coalesce((SELECT sum(messages) FROM b WHERE kind = 'delivery' AND (pending OR client = '')), 0)::bigint
                  AS everyone_delivered"
    )
}

/// The exact percentiles of the last `$2` hours, read row by row: only run
/// when every client's deliveries in the window are at most
/// [`LATENCY_EXACT_UP_TO`].
fn exact_latency_sql() -> String {
    format!(
        "SELECT count(*) AS delivered,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p50_seconds,
                percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p90_seconds,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p99_seconds,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS p50_queue_seconds
           FROM messages
          WHERE delivered_at > now() - make_interval(hours => $2::int) AND accepted_at IS NOT NULL
            AND {OF_CLIENT}"
    )
}

/// As `failure_reasons`: failures of the last 7 days (to the hour) from the
/// rollup and the pending events, and, live, messages Sent has whose answer
/// or status went missing.
fn failure_reasons_sql() -> String {
    format!(
        "SELECT error_code, status, sum(messages)::bigint AS messages, max(last_seen) AS last_seen,
                (array_agg(latest_error ORDER BY last_seen DESC))[1] AS latest_error
           FROM (SELECT error_code, status, messages, last_seen, latest_error FROM dashboard_failures
                  WHERE hour >= date_trunc('hour', now() - interval '7 days') AND {ROLLED_UP}
                 UNION ALL
                 SELECT coalesce(last_error_code, 'unknown'), status, 1, at, last_error FROM dashboard_pending_changes()
                  WHERE status IN {FAILED} AND {OF_CLIENT}
                 UNION ALL
                 SELECT coalesce(last_error_code, 'unknown'), status, 1, updated_at, last_error FROM messages
                  WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
                    AND status IN ('accepted', 'scheduled', 'sent') AND updated_at > now() - interval '7 days'
                    AND {OF_CLIENT}) f
          GROUP BY 1, 2
          ORDER BY messages DESC, last_seen DESC NULLS LAST, error_code
          LIMIT $2"
    )
}

/// As `recent_failures`, newest first through `messages_recent_failures`
/// (or, for a tenant, `messages_client_failed_at`) and `messages_sent_anomalies`.
/// "Failed" is said as that index's condition, which names no status: a
/// failure sets `failed_at`, and only `delivered` and `read` rank above it.
fn recent_failures_sql() -> String {
    format!(
        "SELECT * FROM (
           (SELECT id AS message_id, client, status, last_error_code, last_error, attempts,
                   dead_lettered_at IS NOT NULL AS dead_lettered, failed_at
              FROM messages
             WHERE failed_at IS NOT NULL AND delivered_at IS NULL AND read_at IS NULL AND {OF_CLIENT}
             ORDER BY failed_at DESC
             LIMIT $2)
           UNION ALL
           (SELECT id, client, status, last_error_code, last_error, attempts, false, updated_at
              FROM messages
             WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
               AND status IN ('accepted', 'scheduled', 'sent') AND {OF_CLIENT}
             ORDER BY id DESC
             LIMIT $2)
         ) failures
         ORDER BY failed_at DESC NULLS LAST, message_id DESC
         LIMIT $2"
    )
}

/// What one housekeeping step of the rollups did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupStep {
    /// Events folded in (applied or not).
    pub folded: i64,
    /// Events after the watermark once the step committed: what readers
    /// still add up themselves.
    pub behind: i64,
}

impl Store {
    /// [`Reader::dashboard`], as the status page reads it: from the replica
    /// when there is one.
    pub async fn dashboard(&self, client: Option<&str>) -> Result<DashboardSnapshot, sqlx::Error> {
        self.reader().dashboard(client).await
    }

    /// One housekeeping step of the dashboard's rollups
    /// (migrations/20261210100000_dashboard_rollups.sql): folds in the
    /// events up to the highest id the previous step saw, once every
    /// transaction in flight then has ended, at most `max_events` of them;
    /// then notes the highest id now.
    ///
    /// "Every transaction in flight then has ended" is read two ways, either
    /// enough: no transaction of the cluster older than the noted snapshot's
    /// xmax runs; or no transaction that may write `message_events` (one
    /// holding its ROW EXCLUSIVE lock, which a writer takes before it draws
    /// an id and keeps until it ends) is older or has no id yet. The second
    /// keeps a long transaction in another database, or one that never
    /// writes the timeline, from holding the rollups back. `None` when another worker is at it
    /// (steps may run in every worker at once: one of them folds).
    pub async fn roll_up_dashboard(
        &self,
        max_events: i64,
    ) -> Result<Option<RollupStep>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let state: Option<(i64, Option<i64>, bool)> = sqlx::query_as(
            "SELECT done_id, next_id, next_xmax IS NOT NULL AND (
                      pg_snapshot_xmin(pg_current_snapshot()) >= next_xmax
                      OR NOT EXISTS (
                        SELECT 1 FROM pg_locks l
                          LEFT JOIN pg_locks x ON x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock'
                                              AND x.virtualtransaction = l.virtualtransaction
                         WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock'
                           AND l.relation = 'message_events'::regclass
                           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                           AND (x.transactionid IS NULL
                                OR age(x.transactionid)::bigint >= pg_snapshot_xmax(pg_current_snapshot())::text::bigint
                                                                   - next_xmax::text::bigint - 2)))
               FROM dashboard_rollup_state FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((done, next, settled)) = state else {
            return Ok(None);
        };
        let mut folded = 0;
        let mut next = next;
        if let Some(next_id) = next.filter(|_| settled) {
            let upto = next_id.min(done.saturating_add(max_events.max(1)));
            if upto > done {
                sqlx::query(&format!(
                    "WITH ch AS MATERIALIZED (SELECT * FROM dashboard_pending_changes($1)),
                     counts AS (
                       INSERT INTO dashboard_status_counts AS c (client, status, messages)
                       SELECT coalesce(client, ''), status, sum(d)::bigint
                         FROM (SELECT client, status, 1 AS d FROM ch
                               UNION ALL SELECT client, prev, -1 FROM ch WHERE prev IS NOT NULL) x
                        GROUP BY GROUPING SETS ((client, status), (status))
                       HAVING sum(d) <> 0
                       ON CONFLICT (client, status) DO UPDATE SET messages = c.messages + EXCLUDED.messages
                     ), minutes AS (
                       INSERT INTO dashboard_minutes AS r (minute, client, created, accepted, delivered, failed)
                       SELECT date_trunc('minute', at), coalesce(client, ''), count(*) FILTER (WHERE prev IS NULL),
                              count(*) FILTER (WHERE status = 'accepted'), count(*) FILTER (WHERE status = 'delivered'),
                              count(*) FILTER (WHERE status IN {FAILED})
                         FROM ch GROUP BY GROUPING SETS ((1, client), (1))
                       ON CONFLICT (client, minute) DO UPDATE
                         SET created = r.created + EXCLUDED.created, accepted = r.accepted + EXCLUDED.accepted,
                             delivered = r.delivered + EXCLUDED.delivered, failed = r.failed + EXCLUDED.failed
                     ), latency AS (
                       INSERT INTO dashboard_latency AS l (hour, client, kind, bucket, messages)
                       SELECT date_trunc('hour', at), coalesce(client, ''), k.kind, dashboard_latency_bucket(k.seconds),
                              count(*)
                         FROM ch
                        CROSS JOIN LATERAL (VALUES ('delivery', extract(epoch FROM at - accepted_at)::float8),
                                                   ('queue', extract(epoch FROM accepted_at - created_at)::float8))
                                   k(kind, seconds)
                        WHERE status = 'delivered' AND accepted_at IS NOT NULL
                        GROUP BY GROUPING SETS ((1, client, 3, 4), (1, 3, 4))
                       ON CONFLICT (client, hour, kind, bucket) DO UPDATE SET messages = l.messages + EXCLUDED.messages
                     ), failures AS (
                       INSERT INTO dashboard_failures AS f (hour, client, error_code, status, messages, last_seen, latest_error)
                       SELECT date_trunc('hour', at), coalesce(client, ''), coalesce(last_error_code, 'unknown'), status,
                              count(*), max(at), (array_agg(last_error ORDER BY at DESC))[1]
                         FROM ch WHERE status IN {FAILED}
                        GROUP BY GROUPING SETS ((1, client, 3, 4), (1, 3, 4))
                       ON CONFLICT (client, hour, error_code, status) DO UPDATE
                         SET messages = f.messages + EXCLUDED.messages,
                             latest_error = CASE WHEN EXCLUDED.last_seen >= f.last_seen THEN EXCLUDED.latest_error
                                                 ELSE f.latest_error END,
                             last_seen = greatest(f.last_seen, EXCLUDED.last_seen)
                     )
                     UPDATE dashboard_rollup_state SET done_id = $1, rolled_at = now()"
                ))
                .bind(upto)
                .execute(&mut *tx)
                .await?;
                folded = upto - done;
                if upto == next_id {
                    next = None;
                }
            }
        }
        if next.is_none() || (settled && folded == 0) {
            // Ids up to the highest now are final once every transaction
            // running now (all below this snapshot's xmax) has ended.
            sqlx::query(
                "UPDATE dashboard_rollup_state
                    SET next_id = (SELECT max(id) FROM message_events),
                        next_xmax = pg_snapshot_xmax(pg_current_snapshot())",
            )
            .execute(&mut *tx)
            .await?;
        }
        let behind: i64 = sqlx::query_scalar(
            "SELECT greatest(coalesce((SELECT max(id) FROM message_events), 0) - done_id, 0)
               FROM dashboard_rollup_state",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(RollupStep { folded, behind }))
    }

    /// Deletes rows of the rollups older than the views show.
    pub async fn prune_dashboard_rollups(&self) -> Result<u64, sqlx::Error> {
        let mut pruned = 0;
        for sql in [
            "DELETE FROM dashboard_minutes WHERE minute < now() - make_interval(days => $1)",
            "DELETE FROM dashboard_latency WHERE hour < now() - make_interval(days => $1)",
            "DELETE FROM dashboard_failures WHERE hour < now() - make_interval(days => $1)",
        ] {
            pruned += sqlx::query(sql)
                .bind(ROLLUP_KEEP_DAYS)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(pruned)
    }
}

impl Reader<'_> {
    /// Everything the status page shows: of every client (`None`, an
    /// operator's view) or of one (`Some(name)`, a tenant's). From the
    /// replica when there is one, so it may lag the primary.
    ///
    /// The queries are the dashboard views' definitions
    /// (migrations/20261210100000_dashboard_rollups.sql) with a filter on
    /// the client, so an operator's page shows what Grafana and psql show
    /// (`common/tests/dashboard_scope.rs` checks that they agree). Each reads
    /// the rollups plus the events not yet folded in, or a bounded number of
    /// rows through an index: none costs more as `messages` grows
    /// (`bench/dashboard.sh`).
    pub async fn dashboard(&self, client: Option<&str>) -> Result<DashboardSnapshot, sqlx::Error> {
        let pool = self.pool;
        let status_counts_sql = status_counts_sql();
        let status_counts = sqlx::query_as(&status_counts_sql)
            .bind(client)
            .fetch_all(pool);
        let throughput_sql = throughput_sql();
        let throughput = sqlx::query_as(&throughput_sql)
            .bind(client)
            .bind(i64::from(THROUGHPUT_MINUTES))
            .fetch_all(pool);
        let latency = async {
            let (histogram, everyone): (DeliveryLatency, i64) = {
                let row = sqlx::query(&latency_sql())
                    .bind(client)
                    .bind(i64::from(LATENCY_WINDOW_HOURS))
                    .fetch_one(pool)
                    .await?;
                use sqlx::{FromRow, Row};
                (
                    DeliveryLatency::from_row(&row)?,
                    row.try_get("everyone_delivered")?,
                )
            };
            if everyone > LATENCY_EXACT_UP_TO {
                return Ok(histogram);
            }
            sqlx::query_as(&exact_latency_sql())
                .bind(client)
                .bind(i64::from(LATENCY_WINDOW_HOURS))
                .fetch_one(pool)
                .await
        };
        let failure_reasons_sql = failure_reasons_sql();
        let failure_reasons = sqlx::query_as(&failure_reasons_sql)
            .bind(client)
            .bind(FAILURE_REASONS)
            .fetch_all(pool);
        let recent_failures_sql = recent_failures_sql();
        let recent_failures = sqlx::query_as(&recent_failures_sql)
            .bind(client)
            .bind(RECENT_FAILURES)
            .fetch_all(pool);
        let forwarding = async {
            match client {
                None => sqlx::query_as(FORWARDING_SQL)
                    .fetch_all(pool)
                    .await
                    .map(Some),
                Some(_) => Ok(None),
            }
        };
        let (status_counts, throughput, latency, failure_reasons, recent_failures, forwarding) = tokio::try_join!(
            status_counts,
            throughput,
            latency,
            failure_reasons,
            recent_failures,
            forwarding
        )?;
        Ok(DashboardSnapshot {
            generated_at: Utc::now(),
            status_counts,
            throughput,
            latency,
            failure_reasons,
            recent_failures,
            forwarding,
        })
    }
}
