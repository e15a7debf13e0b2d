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
use crate::api::wire::{InboundMedia, InboundMessageEventPayload};
use crate::faults::Faults;
use crate::stats::Stats;
use crate::util::rfc3339;
use crate::webhook::{Event, deliver};

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

/// A contact's message, as a test describes it to `POST /_sim/inbound`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inbound {
    /// The contact (E.164): `inbound_number`.
    from: String,
    /// The account's number written to (`outbound_number`).
    #[serde(default = "default_number")]
    to: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default = "default_channel")]
    channel: String,
    #[serde(default)]
    media: Vec<InboundMedia>,
}

fn default_number() -> String {
    "+18005550100".into()
}

fn default_channel() -> String {
    "sms".into()
}

/// Makes a contact write to the account: a signed `message.received`
/// webhook goes to the webhook endpoint (retried like any other). Answers
/// `202` with the event's id and whether the first attempt was delivered.
pub(crate) async fn inbound(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let inbound = match serde_json::from_slice::<Inbound>(&body) {
        Ok(inbound) => inbound,
        Err(err) => return bad_request(err.to_string()),
    };
    let e164 = |n: &str| {
        n.strip_prefix('+')
            .is_some_and(|d| (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if !e164(&inbound.from) || !e164(&inbound.to) {
        return bad_request("from and to must be E.164 numbers".into());
    }
    let now = rfc3339(chrono::Utc::now());
    let payload = InboundMessageEventPayload {
        message_id: uuid::Uuid::new_v4().to_string(),
        inbound_number: inbound.from,
        outbound_number: inbound.to,
        account_id: sim.accounts[0].account_id.to_string(),
        channel: inbound.channel,
        text: inbound.text,
        media: inbound.media,
        received_at: now.clone(),
        updated_at: now,
    };
    let event = Event::inbound(&payload, sim.config.webhook_envelope);
    let (event_id, message_id) = (event.id.clone(), payload.message_id.clone());
    let delivered = deliver(&sim, event).await;
    (
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event_id, "message_id": message_id, "delivered": delivered})),
    )
        .into_response()
}

fn bad_request(problem: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": problem}))).into_response()
}
