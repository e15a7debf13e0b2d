//! Inbound webhooks: `POST /webhooks/{sent,stripe,telegram}`.
//!
//! Each request is verified on its raw body by the provider's
//! [`WebhookVerifier`], then parsed (it must be JSON), then written to the
//! inbox through group commit, and only then answered `200 {"received": true}`.
//! Processing happens later, in the worker. A provider with no secret
//! configured answers 404: there is no unauthenticated way in.
//!
//! The content type is not checked: the signature already proves who sent the
//! body, and a 4xx would count against the endpoint at the provider (Sent
//! deactivates an endpoint after 10 failures in a row). The body must still
//! be a JSON object.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use common::config::WebhookConfig;
use common::domain::Provider;
use common::signature::{
    SentVerifier, StripeVerifier, TelegramVerifier, WebhookSecret, WebhookVerifier, headers,
};
use common::store::{InboxInsert, InboxInsertOutcome};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use utoipa::ToSchema;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::{WebhookErrors, header_param};

/// Longest event id stored as given; longer ones are stored as their hash.
const MAX_EVENT_ID: usize = 255;

/// Headers kept with the event for audit and processing. Signatures are
/// kept (they are not secrets, and let an operator re-verify); Telegram's
/// token header is the secret itself, so it is never stored.
fn kept_header_names(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Sent => &[
            headers::SENT_ID,
            headers::SENT_TIMESTAMP,
            headers::SENT_SIGNATURE,
            headers::SENT_EVENT_ID,
        ],
        Provider::Stripe => &[headers::STRIPE_SIGNATURE],
        Provider::Telegram => &[],
    }
}

/// Headers kept for every provider.
const COMMON_HEADERS: [&str; 3] = ["content-type", "user-agent", "x-request-id"];

/// The configured verifiers; `None` for a provider without a secret.
pub struct Verifiers {
    sent: Option<Arc<dyn WebhookVerifier>>,
    stripe: Option<Arc<dyn WebhookVerifier>>,
    telegram: Option<Arc<dyn WebhookVerifier>>,
}

impl Verifiers {
    /// Builds the verifiers from configuration. Fails, naming the variable,
    /// when Sent secrets are configured but none can verify anything.
    pub fn from_config(config: &WebhookConfig) -> anyhow::Result<Verifiers> {
        let raw = |list: &[common::config::Secret]| {
            list.iter()
                .map(|s| s.expose().to_owned())
                .collect::<Vec<_>>()
        };
        let sent_raw = raw(&config.sent_secrets);
        let sent = if sent_raw.is_empty() {
            None
        } else {
            let secrets: Vec<WebhookSecret> = sent_raw
                .iter()
                .filter_map(|s| WebhookSecret::parse(s).ok())
                .collect();
            if secrets.is_empty() && !config.allow_legacy_signature {
                anyhow::bail!(
                    "SENT_DM_WEBHOOK_SECRET: no entry is a whsec_ (base64) secret, and the legacy hex \
                     signature is disabled (WEBHOOK_ALLOW_LEGACY_SIGNATURE)"
                );
            }
            if secrets.len() < sent_raw.len() {
                tracing::warn!(
                    unusable = sent_raw.len() - secrets.len(),
                    legacy_allowed = config.allow_legacy_signature,
                    "SENT_DM_WEBHOOK_SECRET: some entries are not whsec_ (base64) secrets; \
                     they can only verify the legacy hex signature"
                );
            }
            Some(Arc::new(SentVerifier {
                secrets,
                legacy_secrets: sent_raw,
                allow_legacy: config.allow_legacy_signature,
                tolerance: config.tolerance,
            }) as Arc<dyn WebhookVerifier>)
        };
        let stripe_raw = raw(&config.stripe_secrets);
        let stripe = (!stripe_raw.is_empty()).then(|| {
            Arc::new(StripeVerifier {
                secrets: stripe_raw,
                tolerance: config.tolerance,
            }) as Arc<dyn WebhookVerifier>
        });
        let telegram_raw = raw(&config.telegram_secret_tokens);
        let telegram = (!telegram_raw.is_empty()).then(|| {
            Arc::new(TelegramVerifier {
                secrets: telegram_raw,
            }) as Arc<dyn WebhookVerifier>
        });
        Ok(Verifiers {
            sent,
            stripe,
            telegram,
        })
    }

    pub fn get(&self, provider: Provider) -> Option<&dyn WebhookVerifier> {
        match provider {
            Provider::Sent => self.sent.as_deref(),
            Provider::Stripe => self.stripe.as_deref(),
            Provider::Telegram => self.telegram.as_deref(),
        }
    }

    /// Names of the providers that are enabled.
    pub fn enabled(&self) -> Vec<&'static str> {
        [Provider::Sent, Provider::Stripe, Provider::Telegram]
            .into_iter()
            .filter(|p| self.get(*p).is_some())
            .map(Provider::as_str)
            .collect()
    }
}

/// A webhook was verified and stored (or was already stored).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"received": true}))]
pub struct Received {
    pub received: bool,
}

/// Webhook bodies are the provider's JSON objects, stored as received.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct WebhookEvent(pub BTreeMap<String, Value>);

/// Sent's webhook body example.
pub fn sent_webhook_example() -> Value {
    json!({
        "field": "message", "event": "message.delivered", "timestamp": "2026-11-25T15:00:03Z",
        "payload": {"message_id": "8ba7b830-9dad-11d1-80b4-00c04fd430c8", "message_status": "DELIVERED",
                    "channel": "sms", "outbound_number": "+14155551234", "updated_at": "2026-11-25T15:00:02Z"}
    })
}

pub fn stripe_webhook_example() -> Value {
    json!({"id": "evt_1QxYz2AbCdEf", "object": "event", "type": "payment_intent.succeeded",
           "created": 1795622400, "data": {"object": {"id": "pi_3QxYz2AbCdEf", "amount": 4200}}})
}

pub fn telegram_webhook_example() -> Value {
    json!({"update_id": 10000, "message": {"message_id": 1, "date": 1795622400,
           "chat": {"id": 1111, "type": "private"}, "text": "/start"}})
}

/// Sent's signature headers (Standard Webhooks, `whsec_` secrets in
/// `SENT_DM_WEBHOOK_SECRET`).
pub struct SentSignature;

impl IntoParams for SentSignature {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        vec![
            header_param(
                "X-Webhook-Id",
                true,
                "Sent's webhook endpoint id, part of the signed content.",
                text(),
                json!("3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b"),
            ),
            header_param(
                "X-Webhook-Timestamp",
                true,
                "Unix seconds; refused outside `WEBHOOK_TOLERANCE_SECS` (300) of now.",
                text().pattern(Some("^[0-9]+$")),
                json!("1795622400"),
            ),
            header_param(
                "X-Webhook-Signature",
                true,
                "`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, space-separated when several.",
                text(),
                json!("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
            ),
            header_param(
                "X-Webhook-Event-Id",
                false,
                "The event's id, stored with it. The same body twice is stored once, whatever its id; an id seen before with another body is stored and flagged.",
                text(),
                json!("evt_01JDX4W1Q2"),
            ),
        ]
    }
}

/// Stripe's `Stripe-Signature` header (`STRIPE_WEBHOOK_SECRET`).
pub struct StripeSignature;

impl IntoParams for StripeSignature {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "Stripe-Signature",
            true,
            "`t=<unix seconds>,v1=<hex HMAC-SHA256 of t.body>`, within the tolerance.",
            ObjectBuilder::new().schema_type(Type::String),
            json!(
                "t=1795622400,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
            ),
        )]
    }
}

/// Telegram's secret token header (`TELEGRAM_WEBHOOK_SECRET_TOKEN`).
pub struct TelegramToken;

impl IntoParams for TelegramToken {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "X-Telegram-Bot-Api-Secret-Token",
            true,
            "The secret token given to Telegram's setWebhook.",
            ObjectBuilder::new().schema_type(Type::String),
            json!("tg_Secret-123"),
        )]
    }
}

/// Sent's delivery events.
///
/// Verified on the raw body (Standard Webhooks), written to the inbox, then
/// answered; the worker applies them to the message. The same event twice is
/// stored once and answered 200 both times.
#[utoipa::path(post, path = "/webhooks/sent", tag = "webhooks", operation_id = "sentWebhook",
    params(SentSignature),
    request_body(content = WebhookEvent, example = json!(sent_webhook_example())),
    responses((status = 200, description = "Verified and stored (or already stored)", body = Received),
        WebhookErrors))]
pub async fn sent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(&state, Provider::Sent, &headers, body).await
}

/// Stripe's events, verified by `Stripe-Signature` and stored in the inbox.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks", operation_id = "stripeWebhook",
    params(StripeSignature),
    request_body(content = WebhookEvent, example = json!(stripe_webhook_example())),
    responses((status = 200, description = "Verified and stored (or already stored)", body = Received),
        WebhookErrors))]
pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(&state, Provider::Stripe, &headers, body).await
}

/// Telegram's updates, verified by their secret token and stored in the inbox.
#[utoipa::path(post, path = "/webhooks/telegram", tag = "webhooks", operation_id = "telegramWebhook",
    params(TelegramToken),
    request_body(content = WebhookEvent, example = json!(telegram_webhook_example())),
    responses((status = 200, description = "Verified and stored (or already stored)", body = Received),
        WebhookErrors))]
pub async fn telegram(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(&state, Provider::Telegram, &headers, body).await
}

async fn receive(
    state: &AppState,
    provider: Provider,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let verifier = state.webhooks.get(provider).ok_or(ApiError::NotFound)?;
    verifier
        .verify(headers, &body, Utc::now().timestamp())
        .map_err(|error| {
            // The reason only: header values are never logged.
            tracing::info!(
                provider = provider.as_str(),
                reason = error.reason(),
                "webhook signature rejected"
            );
            metrics::counter!(common::metrics::WEBHOOKS, "provider" => provider.as_str(), "outcome" => "rejected",
                "reason" => error.reason())
            .increment(1);
            ApiError::BadSignature(error.reason())
        })?;
    let json = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(ApiError::MalformedJson("expected a JSON object".into())),
        Err(e) => return Err(ApiError::MalformedJson(e.to_string())),
    };
    let (event_id, event_type) = describe(provider, headers, &json, &body);
    let event = InboxInsert {
        provider,
        event_id,
        event_type,
        headers: kept_headers(provider, headers),
        body: body.to_vec(),
    };
    let (event_id, event_type) = (event.event_id.clone(), event.event_type.clone());
    // Whatever the cause, the event is not stored: the sender must retry,
    // which a 503 asks for (this is almost always the database being down).
    let outcome = state.inbox.store(event).await.map_err(|error| {
        tracing::warn!(%error, provider = provider.as_str(), "could not store a webhook event");
        ApiError::Unavailable("postgres")
    })?;
    let outcome_label = match outcome {
        InboxInsertOutcome::Stored => "stored",
        InboxInsertOutcome::Duplicate => "duplicate",
        InboxInsertOutcome::StoredReusedEventId => {
            // Stored anyway: the body is signed, the id may not be, and a
            // guessed id must not pre-empt the real event.
            tracing::warn!(
                provider = provider.as_str(),
                event_id,
                "webhook event id already stored with another body; stored and flagged"
            );
            "reused_event_id"
        }
    };
    metrics::counter!(common::metrics::WEBHOOKS, "provider" => provider.as_str(), "outcome" => outcome_label,
        "reason" => "")
    .increment(1);
    tracing::debug!(
        provider = provider.as_str(),
        event_id,
        event_type,
        duplicate = outcome == InboxInsertOutcome::Duplicate,
        "webhook stored"
    );
    Ok((StatusCode::OK, Json(Received { received: true })).into_response())
}

/// The event's id (stored, and flagged when it comes with another body) and type.
pub fn describe(
    provider: Provider,
    headers: &HeaderMap,
    json: &Map<String, Value>,
    body: &[u8],
) -> (String, Option<String>) {
    let (id, event_type) = match provider {
        Provider::Sent => {
            let event_type = text(json.get("event"))
                .or_else(|| text(json.get("sub_type")))
                .or_else(|| text(json.get("type")))
                .or_else(|| text(json.get("field")))
                .map(str::to_owned);
            let header_id = headers
                .get(headers::SENT_EVENT_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            // SENT_API.md's fallback: message id + event + when it happened.
            let derived = || {
                let payload = json
                    .get("payload")
                    .or_else(|| json.get("value"))
                    .or_else(|| json.get("data"))?;
                let message_id =
                    text(payload.get("message_id")).or_else(|| text(payload.get("id")))?;
                let updated_at =
                    text(payload.get("updated_at")).or_else(|| text(json.get("timestamp")))?;
                Some(format!(
                    "{message_id}:{}:{updated_at}",
                    event_type.as_deref()?
                ))
            };
            (header_id.or_else(derived), event_type)
        }
        Provider::Stripe => (
            text(json.get("id")).map(str::to_owned),
            text(json.get("type")).map(str::to_owned),
        ),
        Provider::Telegram => {
            let id = json.get("update_id").and_then(|v| match v {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                _ => None,
            });
            // The update's kind is its one other field: message, callback_query, ...
            let kind = json.keys().find(|k| *k != "update_id").cloned();
            (id, kind)
        }
    };
    let id = match id {
        // Postgres text cannot hold U+0000: an id with one is stored as its
        // hash, like a long one (a failed insert would fail its whole group).
        Some(id) if id.len() <= MAX_EVENT_ID && !id.contains('\0') => id,
        Some(long) => format!("sha256:{}", hex::encode(Sha256::digest(long.as_bytes()))),
        // No id at all: the body itself identifies the event, so an exact
        // redelivery is still stored once.
        None => format!("sha256:{}", hex::encode(Sha256::digest(body))),
    };
    (id, event_type.map(|t| t.replace('\0', "\u{FFFD}")))
}

/// A non-empty string value, trimmed.
fn text(value: Option<&Value>) -> Option<&str> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn kept_headers(provider: Provider, headers: &HeaderMap) -> Value {
    let mut kept = Map::new();
    for name in COMMON_HEADERS.iter().chain(kept_header_names(provider)) {
        if let Some(value) = headers.get(*name) {
            kept.insert(
                (*name).to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            );
        }
    }
    Value::Object(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn sent_event_id_prefers_the_header() {
        let mut h = HeaderMap::new();
        h.insert("x-webhook-event-id", HeaderValue::from_static("evt_1"));
        let body = object(
            json!({"field": "message", "event": "message.sent", "payload": {"message_id": "m"}}),
        );
        assert_eq!(
            describe(Provider::Sent, &h, &body, b"{}"),
            ("evt_1".into(), Some("message.sent".into()))
        );
    }

    #[test]
    fn sent_event_id_falls_back_to_message_event_and_time() {
        let body = object(json!({"field": "messages", "sub_type": "message.delivered",
            "value": {"message_id": "m1", "updated_at": "2026-01-01T00:00:00+00:00"}}));
        let (id, kind) = describe(Provider::Sent, &HeaderMap::new(), &body, b"x");
        assert_eq!(id, "m1:message.delivered:2026-01-01T00:00:00+00:00");
        assert_eq!(kind.as_deref(), Some("message.delivered"));
    }

    #[test]
    fn unfamiliar_events_get_a_body_hash_id() {
        let body = object(json!({"field": "templates", "value": {"id": 1}}));
        let (id, kind) = describe(Provider::Sent, &HeaderMap::new(), &body, b"raw");
        assert_eq!(
            id,
            format!("sha256:{}", hex::encode(Sha256::digest(b"raw")))
        );
        assert_eq!(kind.as_deref(), Some("templates"));
    }

    #[test]
    fn long_ids_are_hashed() {
        let mut h = HeaderMap::new();
        let long = "e".repeat(300);
        h.insert("x-webhook-event-id", HeaderValue::from_str(&long).unwrap());
        let (id, _) = describe(Provider::Sent, &h, &Map::new(), b"{}");
        assert!(id.starts_with("sha256:") && id.len() == 71);
    }

    #[test]
    fn stripe_and_telegram_ids() {
        let stripe = object(json!({"id": "evt_9", "type": "invoice.paid"}));
        assert_eq!(
            describe(Provider::Stripe, &HeaderMap::new(), &stripe, b""),
            ("evt_9".into(), Some("invoice.paid".into()))
        );
        let telegram = object(json!({"update_id": 42, "message": {"text": "hi"}}));
        assert_eq!(
            describe(Provider::Telegram, &HeaderMap::new(), &telegram, b""),
            ("42".into(), Some("message".into()))
        );
    }

    #[test]
    fn telegram_token_is_never_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-telegram-bot-api-secret-token",
            HeaderValue::from_static("secret"),
        );
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(
            kept_headers(Provider::Telegram, &h),
            json!({"content-type": "application/json"})
        );
    }
}
