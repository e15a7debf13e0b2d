//! The built-in status page: `GET /dashboard` (HTML, with its script and
//! stylesheet as separate files for the CSP) and `GET /dashboard/data`, the
//! numbers it shows, as the dashboard views count them. It needs an API key
//! unless `DASHBOARD_PUBLIC=true`: an admin key sees every client's
//! messages, a tenant key only its own; the page asks for the key and keeps
//! it in the tab's `sessionStorage`. With `DASHBOARD_PUBLIC=true` (no key)
//! it shows every client's, as the operator chose. Forwarding (per source
//! and destination) is part of every client's view only: an admin key's, or
//! the public page's; never a tenant's.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use common::config::ForwardDestination;
use common::domain::MessageStatus;
use common::store::{
    DashboardSnapshot, FailureReason, ForwardingSummary, RecentFailure, ThroughputMinute,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::{self, Client};
use crate::error::ApiError;
use crate::openapi::{RateLimitedErrors, ReadErrors};

const PAGE: &str = include_str!("../../static/dashboard/index.html");
const SCRIPT: &str = include_str!("../../static/dashboard/app.js");
const STYLESHEET: &str = include_str!("../../static/dashboard/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The status page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard", operation_id = "dashboardPage",
    responses((status = 200, description = "The status page", content_type = "text/html", body = String),
        RateLimitedErrors))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// The status page's script.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard", operation_id = "dashboardScript",
    responses((status = 200, description = "The status page's script", content_type = "text/javascript",
        body = String), RateLimitedErrors))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The status page's stylesheet.
#[utoipa::path(get, path = "/dashboard/app.css", tag = "dashboard", operation_id = "dashboardStylesheet",
    responses((status = 200, description = "The status page's stylesheet", content_type = "text/css",
        body = String), RateLimitedErrors))]
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

/// The status page's numbers.
///
/// Messages by status, throughput per minute over the last hour, delivery
/// latency percentiles over the last 24 hours, failure reasons over the last
/// 7 days, and the newest failures: of the calling key's client (a tenant
/// key), or of every client (an admin key, or no key with
/// `DASHBOARD_PUBLIC=true`). `client` says which. Every client's view also
/// has `forwarding`; a tenant's has none. Read from the read replica when
/// the gateway has one, so it may lag a moment behind.
#[utoipa::path(get, path = "/dashboard/data", tag = "dashboard", operation_id = "dashboardData",
    responses((status = 200, description = "The dashboard's numbers", body = DashboardData), ReadErrors))]
pub async fn data(
    State(state): State<AppState>,
    caller: Option<Extension<Client>>,
) -> Result<Response, ApiError> {
    let scope = caller
        .as_ref()
        .and_then(|Extension(client)| client.dashboard_scope());
    let snapshot = state.store.reader().dashboard(scope).await?;
    let mut data = DashboardData::from(snapshot);
    data.client = scope.map(str::to_owned);
    if let Some(rows) = &mut data.forwarding {
        add_configured(rows, &state.config.forward.destinations);
    }
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(data)).into_response())
}

/// Middleware of `/dashboard/data`: a valid API key (whose role decides
/// what it sees), or none when `DASHBOARD_PUBLIC=true`.
pub async fn require_key_unless_public(
    state: State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config.gateway.public_dashboard {
        return Ok(next.run(request).await);
    }
    auth::require_api_key(state, request, next).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DashboardData {
    pub generated_at: DateTime<Utc>,
    /// Whose messages these are: the calling key's name (a tenant key), or
    /// null for every client's (an admin key, or `DASHBOARD_PUBLIC=true`).
    pub client: Option<String>,
    /// Messages of all time.
    pub total: i64,
    /// Every status, in progress order, with its messages (zero included).
    pub statuses: Vec<StatusCount>,
    /// Per minute over the last 60 minutes, oldest first (the current minute last).
    pub throughput: Vec<ThroughputMinute>,
    pub latency: Latency,
    /// Why messages failed over the last 7 days, most frequent first (up to 20).
    pub failure_reasons: Vec<FailureReason>,
    /// The newest failed, blocked, filtered or cancelled messages (up to 20).
    pub recent_failures: Vec<RecentFailure>,
    /// Forwarding of provider events to the operator's services, per source
    /// and destination (those with forwards, and those configured here):
    /// in every client's view only, absent from a tenant's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Vec<ForwardingSummary>>,
}

/// Adds the destinations configured in this process that have no forward
/// yet, with zeros, so a new destination shows before its first event.
fn add_configured(rows: &mut Vec<ForwardingSummary>, configured: &[ForwardDestination]) {
    for destination in configured {
        let known = rows
            .iter()
            .any(|r| r.source == destination.source && r.destination == destination.name);
        if !known {
            rows.push(ForwardingSummary {
                source: destination.source,
                destination: destination.name.clone(),
                received_24h: 0,
                forwarded_24h: 0,
                pending: 0,
                failing: 0,
                dead: 0,
                oldest_pending_seconds: 0.0,
            });
        }
    }
    rows.sort_by(|a, b| {
        (a.source.as_str(), &a.destination).cmp(&(b.source.as_str(), &b.destination))
    });
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    #[schema(value_type = common::domain::MessageStatus)]
    pub status: String,
    pub messages: i64,
}

/// Seconds from Sent's accept to delivery, over the last 24 hours; null while
/// nothing was delivered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Latency {
    pub window_hours: i32,
    pub delivered: i64,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Median seconds from our accept to Sent's.
    pub p50_queue_seconds: Option<f64>,
}

impl From<DashboardSnapshot> for DashboardData {
    fn from(s: DashboardSnapshot) -> DashboardData {
        let count = |status: MessageStatus| {
            s.status_counts
                .iter()
                .filter(|c| c.status == status.as_str())
                .map(|c| c.messages)
                .sum::<i64>()
        };
        let statuses = MessageStatus::ALL
            .iter()
            .map(|status| StatusCount {
                status: status.as_str().to_owned(),
                messages: count(*status),
            })
            .collect();
        DashboardData {
            generated_at: s.generated_at,
            client: None,
            total: s.status_counts.iter().map(|c| c.messages).sum(),
            statuses,
            throughput: s.throughput,
            latency: Latency {
                window_hours: common::store::LATENCY_WINDOW_HOURS,
                delivered: s.latency.delivered,
                p50_seconds: s.latency.p50_seconds,
                p90_seconds: s.latency.p90_seconds,
                p99_seconds: s.latency.p99_seconds,
                p50_queue_seconds: s.latency.p50_queue_seconds,
            },
            failure_reasons: s.failure_reasons,
            recent_failures: s.recent_failures,
            forwarding: s.forwarding,
        }
    }
}
