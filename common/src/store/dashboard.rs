//! The numbers of the built-in status page (`GET /dashboard/data`): the
//! dashboard views' definitions (migrations/20261125000003_dashboard_views.sql
//! and later), so the page, Grafana and psql all show the same thing, with
//! an optional filter on the client, so a tenant's key sees its own.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Reader, Store};

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
}

/// Messages of one client only, or of every client (`None`). In SQL, as
/// `$n::text IS NULL OR client = $n`: every statement is planned for its
/// parameters (`Store::connect_lazy`), so the planner drops whichever side
/// does not apply and uses the indexes on `client` for a tenant.
const OF_CLIENT: &str = "($1::text IS NULL OR client = $1)";

impl Store {
    /// [`Reader::dashboard`], as the status page reads it: from the replica
    /// when there is one.
    pub async fn dashboard(&self, client: Option<&str>) -> Result<DashboardSnapshot, sqlx::Error> {
        self.reader().dashboard(client).await
    }
}

impl Reader<'_> {
    /// Everything the status page shows: of every client (`None`, an
    /// operator's view) or of one (`Some(name)`, a tenant's). From the
    /// replica when there is one, so it may lag the primary.
    ///
    /// The queries are the dashboard views' definitions
    /// (migrations/20261125000003_dashboard_views.sql and their later
    /// versions) with a filter on the client, so an operator's page shows
    /// what Grafana and psql show (`common/tests/dashboard_scope.rs` checks
    /// that they agree). A tenant's page costs no more than an operator's:
    /// each number is bounded by the same time window or read through an
    /// index on `client`.
    pub async fn dashboard(&self, client: Option<&str>) -> Result<DashboardSnapshot, sqlx::Error> {
        let pool = self.pool;
        let status_counts_sql = format!(
            "SELECT status, count(*) AS messages FROM messages WHERE {OF_CLIENT}
              GROUP BY status ORDER BY status_rank(status), status"
        );
        let status_counts = sqlx::query_as(&status_counts_sql)
            .bind(client)
            .fetch_all(pool);
        // Only these minutes are counted, each through the indexes on its
        // timestamp. The cost estimate of the correlated counts sets off JIT
        // compilation, which takes longer than the query itself.
        let throughput = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
            let count = |column: &str| {
                format!(
                    "(SELECT count(*) FROM messages WHERE {column} >= m.minute
                         AND {column} < m.minute + interval '1 minute' AND {OF_CLIENT})"
                )
            };
            let minutes: Vec<ThroughputMinute> = sqlx::query_as(&format!(
                "SELECT m.minute, {} AS created, {} AS accepted, {} AS delivered, {} AS failed
                   FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $2 - 1),
                                        date_trunc('minute', now()), interval '1 minute') AS m(minute)
                  ORDER BY m.minute",
                count("created_at"),
                count("accepted_at"),
                count("delivered_at"),
                count("failed_at"),
            ))
            .bind(client)
            .bind(THROUGHPUT_MINUTES)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(minutes)
        };
        // The view's percentiles are per hour and cannot be combined, so the
        // window's are computed here with the view's definition.
        let latency_sql = format!(
            "SELECT count(*) AS delivered,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p50_seconds,
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p90_seconds,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p99_seconds,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS p50_queue_seconds
               FROM messages
              WHERE delivered_at > now() - make_interval(hours => $2) AND accepted_at IS NOT NULL
                AND {OF_CLIENT}"
        );
        let latency = sqlx::query_as(&latency_sql)
            .bind(client)
            .bind(LATENCY_WINDOW_HOURS)
            .fetch_one(pool);
        // As `failure_reasons`: failures, and messages Sent has whose answer
        // or status went missing, of the last 7 days.
        let failure_reasons_sql = format!(
            "SELECT coalesce(last_error_code, 'unknown') AS error_code, status,
                    count(*) AS messages,
                    max(coalesce(failed_at, updated_at)) AS last_seen,
                    (array_agg(last_error ORDER BY coalesce(failed_at, updated_at) DESC))[1] AS latest_error
               FROM messages
              WHERE ((status IN ('failed', 'blocked', 'filtered', 'cancelled')
                      AND failed_at > now() - interval '7 days')
                  OR (last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
                      AND status IN ('accepted', 'scheduled', 'sent')
                      AND updated_at > now() - interval '7 days'))
                AND {OF_CLIENT}
              GROUP BY 1, 2
              ORDER BY messages DESC, last_seen DESC NULLS LAST, error_code
              LIMIT $2"
        );
        let failure_reasons = sqlx::query_as(&failure_reasons_sql)
            .bind(client)
            .bind(FAILURE_REASONS)
            .fetch_all(pool);
        // As `recent_failures`. A failed, blocked, filtered or cancelled
        // message always has its `failed_at`, which the condition says, so
        // that a tenant's are read from `messages_client_failed_at`.
        let recent_failures_sql = format!(
            "SELECT * FROM (
               (SELECT id AS message_id, client, status, last_error_code, last_error, attempts,
                       dead_lettered_at IS NOT NULL AS dead_lettered, failed_at
                  FROM messages
                 WHERE status IN ('failed', 'blocked', 'filtered', 'cancelled')
                   AND failed_at IS NOT NULL AND {OF_CLIENT}
                 ORDER BY failed_at DESC
                 LIMIT $2)
               UNION ALL
               (SELECT id, client, status, last_error_code, last_error, attempts, false, updated_at
                  FROM messages
                 WHERE last_error_code IN ('sent_answer_without_id', 'sent_status_stale')
                   AND status IN ('accepted', 'scheduled', 'sent') AND {OF_CLIENT}
                 ORDER BY updated_at DESC
                 LIMIT $2)
             ) failures
             ORDER BY failed_at DESC NULLS LAST, message_id DESC
             LIMIT $2"
        );
        let recent_failures = sqlx::query_as(&recent_failures_sql)
            .bind(client)
            .bind(RECENT_FAILURES)
            .fetch_all(pool);
        let (status_counts, throughput, latency, failure_reasons, recent_failures) = tokio::try_join!(
            status_counts,
            throughput,
            latency,
            failure_reasons,
            recent_failures
        )?;
        Ok(DashboardSnapshot {
            generated_at: Utc::now(),
            status_counts,
            throughput,
            latency,
            failure_reasons,
            recent_failures,
        })
    }
}
