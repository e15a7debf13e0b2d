//! The simulator's own routes (no auth): health, stats, runtime settings.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Sim;
use crate::faults::Faults;
use crate::stats::Stats;

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "service": "sent-sim"}))
}

pub(crate) async fn stats(State(sim): State<Arc<Sim>>) -> Json<Stats> {
    Json(sim.counters.snapshot())
}

pub(crate) async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults.get())
}

/// Replaces the faults in effect; fields left out take their defaults.
pub(crate) async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => faults,
        Err(err) => return bad_request(err.to_string()),
    };
    if let Err(problem) = faults.validate() {
        return bad_request(problem);
    }
    sim.faults.set(faults);
    tracing::info!(?faults, "faults changed");
    Json(sim.faults.get()).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WebhookSetting {
    url: Option<String>,
}

pub(crate) async fn get_webhook(State(sim): State<Arc<Sim>>) -> Json<WebhookSetting> {
    Json(WebhookSetting {
        url: sim.webhooks.url().map(|url| url.to_string()),
    })
}

/// `{"url": "http://..."}` sets the webhook endpoint, `{"url": null}` stops webhooks.
pub(crate) async fn set_webhook(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let setting = match serde_json::from_slice::<WebhookSetting>(&body) {
        Ok(setting) => setting,
        Err(err) => return bad_request(err.to_string()),
    };
    if let Some(url) = &setting.url {
        let valid = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !valid {
            return bad_request(format!("{url:?} is not an http(s) URL"));
        }
    }
    tracing::info!(url = ?setting.url, "webhook url changed");
    sim.webhooks.set_url(setting.url.clone());
    Json(setting).into_response()
}

fn bad_request(problem: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": problem}))).into_response()
}
