//! Service index and health checks.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::openapi::{Health, Index, Live, RateLimitedErrors, UnlimitedErrors};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The service, its version and its main endpoints.
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "index",
    responses((status = 200, description = "The service index", body = Index), RateLimitedErrors))]
pub async fn index(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "service": state.config.service_name,
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": {
            "health": "/health",
            "liveness": "/health/live",
            "messages": "/api/messages",
            "send": "/api/messages/send",
            "welcome": "/api/messages/welcome",
            "order_confirmation": "/api/messages/order-confirmation",
            "batch": "/api/messages/batch",
            "webhooks": "/webhooks/sent",
            "metrics": "/metrics",
            "openapi": "/openapi.json",
            "dashboard": "/dashboard",
        }
    }))
}

/// Liveness only: the process answers. Not rate limited.
#[utoipa::path(get, path = "/health/live", tag = "operations", operation_id = "live",
    responses((status = 200, description = "The process is alive", body = Live), UnlimitedErrors))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// Readiness: each dependency answered within a short timeout.
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health",
    responses(
        (status = 200, description = "Postgres and Redis answer", body = Health),
        (status = 503, description = "A dependency does not answer, or the gateway is shutting down; `services` names which", body = Health,
            example = json!({"status": "unhealthy", "service": "sent-gateway", "timestamp": "2026-11-25T15:00:00.000Z",
                "services": {"postgres": "ok", "redis": "unavailable"}})),
        RateLimitedErrors))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => "ok",
            _ => "unavailable",
        }
    };
    let redis = async {
        let mut conn = state.redis.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(CHECK_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => "ok",
            _ => "unavailable",
        }
    };
    let (postgres, redis) = tokio::join!(postgres, redis);
    let mut services = json!({"postgres": postgres, "redis": redis});
    let draining = state.draining.is_cancelled();
    if draining {
        services["gateway"] = json!("draining");
    }
    let healthy = postgres == "ok" && redis == "ok" && !draining;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "service": state.config.service_name,
            "timestamp": common::domain::api_time(Utc::now()),
            "services": services,
        })),
    )
}

/// Prometheus metrics.
///
/// HTTP requests by route and status with latency histograms, messages
/// accepted, webhooks, rate-limit rejections, the Postgres pool. Not rate limited.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4", body = String), UnlimitedErrors))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    common::metrics::record_pool(common::metrics::GATEWAY_POSTGRES_POOL, state.store.pool());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        common::metrics::render(),
    )
}
