//! The numbers of the built-in status page (`GET /dashboard/data`), read from
//! the dashboard views (migrations/20261125000003_dashboard_views.sql), so the
//! page, Grafana and psql all show the same thing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Store;

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

impl Store {
    /// Everything the status page shows, across all clients (an operator view).
    pub async fn dashboard(&self) -> Result<DashboardSnapshot, sqlx::Error> {
        let pool = &self.pool;
        let status_counts = sqlx::query_as(
            "SELECT status, messages FROM message_status_counts ORDER BY status_rank(status), status",
        )
        .fetch_all(pool);
        // The view spans 24 hours; the filter on `minute` is pushed into its
        // series, so only these minutes are counted. Its cost estimate sets
        // off JIT compilation, which takes longer than the query itself.
        let throughput = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
            let minutes: Vec<ThroughputMinute> = sqlx::query_as(
                "SELECT minute, created, accepted, delivered, failed
                   FROM message_throughput_per_minute
                  WHERE minute > date_trunc('minute', now()) - make_interval(mins => $1)
                  ORDER BY minute",
            )
            .bind(THROUGHPUT_MINUTES)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(minutes)
        };
        // The view's percentiles are per hour and cannot be combined, so the
        // window's are computed here with the view's definition.
        let latency = sqlx::query_as(
            "SELECT count(*) AS delivered,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p50_seconds,
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p90_seconds,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - accepted_at)) AS p99_seconds,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS p50_queue_seconds
               FROM messages
              WHERE delivered_at > now() - make_interval(hours => $1) AND accepted_at IS NOT NULL",
        )
        .bind(LATENCY_WINDOW_HOURS)
        .fetch_one(pool);
        let failure_reasons = sqlx::query_as(
            "SELECT error_code, status, messages, last_seen, latest_error
               FROM failure_reasons
              ORDER BY messages DESC, last_seen DESC NULLS LAST, error_code
              LIMIT $1",
        )
        .bind(FAILURE_REASONS)
        .fetch_all(pool);
        let recent_failures = sqlx::query_as(
            "SELECT message_id, client, status, last_error_code, last_error, attempts, dead_lettered, failed_at
               FROM recent_failures
              ORDER BY failed_at DESC NULLS LAST, message_id DESC
              LIMIT $1",
        )
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
