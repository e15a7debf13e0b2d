//! Service index and health checks.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use crate::app::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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
        }
    }))
}

/// Liveness only: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

/// Readiness: each dependency answered within a short timeout.
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
    let healthy = postgres == "ok" && redis == "ok";
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
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "services": {"postgres": postgres, "redis": redis},
        })),
    )
}
