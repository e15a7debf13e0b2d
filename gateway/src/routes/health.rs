//! Service index and health checks.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use common::domain::serialize_api_time;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::{self, AppState};
use crate::openapi::{RateLimitedErrors, UnlimitedErrors};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The service and a map of its main endpoints.
#[derive(Serialize, ToSchema)]
pub struct Index {
    #[schema(example = "sent-gateway")]
    pub service: String,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// Name to path.
    pub endpoints: BTreeMap<&'static str, &'static str>,
}

/// Liveness only.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "alive"}))]
pub struct Live {
    pub status: Alive,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Alive {
    Alive,
}

/// Readiness: Postgres and Redis each answered within 2 seconds (the read
/// replica, when there is one, is reported but not required).
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: Healthiness,
    #[schema(example = "sent-gateway")]
    pub service: String,
    #[serde(serialize_with = "serialize_api_time")]
    pub timestamp: DateTime<Utc>,
    pub services: HealthServices,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Healthiness {
    Healthy,
    Unhealthy,
}

#[derive(Serialize, ToSchema)]
pub struct HealthServices {
    pub postgres: Dependency,
    /// The read replica (`DATABASE_READ_URL`), present only when the gateway
    /// has one. Reported, not required: while it is unavailable only the
    /// message list and the dashboard's numbers answer 503, so it does not
    /// make the gateway unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub postgres_replica: Option<Dependency>,
    pub redis: Dependency,
    /// Present only while the gateway shuts down (it still answers, but load
    /// balancers should stop routing to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub gateway: Option<Draining>,
}

/// `ok` or `unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Ok,
    Unavailable,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Draining {
    Draining,
}

/// The service, its version and its main endpoints.
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "index",
    responses((status = 200, description = "The service index", body = Index), RateLimitedErrors))]
pub async fn index(State(state): State<AppState>) -> Json<Index> {
    Json(Index {
        service: state.config.service_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        endpoints: BTreeMap::from([
            ("health", "/health"),
            ("liveness", "/health/live"),
            ("messages", "/api/messages"),
            ("send", "/api/messages/send"),
            ("welcome", "/api/messages/welcome"),
            ("order_confirmation", "/api/messages/order-confirmation"),
            ("batch", "/api/messages/batch"),
            ("webhooks", "/webhooks/sent"),
            ("metrics", "/metrics"),
            ("openapi", "/openapi.json"),
            ("dashboard", "/dashboard"),
        ]),
    })
}

/// Liveness only: the process answers. Not rate limited.
#[utoipa::path(get, path = "/health/live", tag = "operations", operation_id = "live",
    responses((status = 200, description = "The process is alive", body = Live), UnlimitedErrors))]
pub async fn live() -> Json<Live> {
    Json(Live {
        status: Alive::Alive,
    })
}

/// Readiness: each dependency answered within a short timeout.
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health",
    responses(
        (status = 200, description = "Postgres and Redis answer", body = Health),
        (status = 503, description = "A dependency does not answer, or the gateway is shutting down; `services` names which", body = Health,
            example = json!({"status": "unhealthy", "service": "sent-gateway", "timestamp": "2026-11-25T15:00:00.000Z",
                "services": {"postgres": "ok", "redis": "unavailable"}})),
        RateLimitedErrors))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let postgres = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Dependency::Ok,
            _ => Dependency::Unavailable,
        }
    };
    let redis = async {
        let mut conn = state.redis.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(CHECK_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Dependency::Ok,
            _ => Dependency::Unavailable,
        }
    };
    let postgres_replica = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping_replica()).await {
            Ok(None) => None,
            Ok(Some(Ok(()))) => Some(Dependency::Ok),
            _ => Some(Dependency::Unavailable),
        }
    };
    let (postgres, postgres_replica, redis) = tokio::join!(postgres, postgres_replica, redis);
    let draining = state.draining.is_cancelled();
    let healthy = postgres == Dependency::Ok && redis == Dependency::Ok && !draining;
    let (status, healthiness) = if healthy {
        (StatusCode::OK, Healthiness::Healthy)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Healthiness::Unhealthy)
    };
    let health = Health {
        status: healthiness,
        service: state.config.service_name.clone(),
        timestamp: Utc::now(),
        services: HealthServices {
            postgres,
            postgres_replica,
            redis,
            gateway: draining.then_some(Draining::Draining),
        },
    };
    (status, Json(health))
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    app::document()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json",
            body = Object),
        RateLimitedErrors,
    ))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// Prometheus metrics.
///
/// HTTP requests by route and status with latency histograms, messages
/// accepted, webhooks, rate-limit rejections, the Postgres pool. Not rate limited.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4", body = String), UnlimitedErrors))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    common::metrics::record_pool(common::metrics::GATEWAY_POSTGRES_POOL, state.store.pool());
    if let Some(replica) = state.store.read_pool() {
        common::metrics::record_replica_pool(common::metrics::GATEWAY_POSTGRES_POOL, replica);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        common::metrics::render(),
    )
}
