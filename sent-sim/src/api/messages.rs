//! `POST /v3/messages` and `GET /v3/messages/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, StatusCode};
use uuid::Uuid;

use super::response::{Failure, json, success_body};
use super::validate::{
    ChannelChoice, ValidSend, is_idempotency_key, magic_failure, shape_failure, validate,
};
use super::wire::{Recipient, SendData, parse_send};
use super::{authenticate, new_request_id};
use crate::Sim;
use crate::faults::{DropWhen, Reject};
use crate::lifecycle;
use crate::server::drop_connection;
use crate::stats::bump;
use crate::store::{Begin, MessageMeta};
use crate::util::{rfc3339, sleep_or_cancel};

pub(crate) async fn send(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    bump(&sim.counters.requests);
    bump(&sim.counters.send_requests);
    let nulls = sim.config.null_optionals;
    let request_id = new_request_id();
    let account = match authenticate(&sim, &headers) {
        Ok(account) => account,
        Err(failure) => return failure.into_response(&request_id, sim.limiter.peek(None), nulls),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return Failure::new(rejection.status(), "VALIDATION_001", rejection.body_text())
                .into_response(&request_id, sim.limiter.peek(Some(account)), nulls);
        }
    };

    let faults = sim.faults.roll_send();
    let mut slow = faults.slow;
    if slow.is_some() {
        bump(&sim.counters.fault_slow);
    }
    if faults.drop == Some(DropWhen::Before) {
        bump(&sim.counters.fault_drop_before);
        pause(&sim, slow).await;
        return drop_connection();
    }
    let response = match faults.reject {
        Some(reject) => Err(injected(&sim, reject)),
        None => process(&sim, account, &headers, &body, &request_id, &mut slow).await,
    };
    pause(&sim, slow).await;
    if faults.drop == Some(DropWhen::After) {
        bump(&sim.counters.fault_drop_after);
        return drop_connection();
    }
    response.unwrap_or_else(|failure| {
        failure.into_response(&request_id, sim.limiter.peek(Some(account)), nulls)
    })
}

async fn pause(sim: &Sim, delay: Option<Duration>) {
    if let Some(delay) = delay {
        sleep_or_cancel(delay, &sim.cancel).await;
    }
}

fn injected(sim: &Sim, reject: Reject) -> Failure {
    match reject {
        Reject::RateLimited => {
            bump(&sim.counters.fault_429);
            Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "BUSINESS_002",
                "Rate limit exceeded",
            )
            .retry_after(sim.config.retry_after_secs)
        }
        Reject::ServerError => {
            bump(&sim.counters.fault_5xx);
            let (status, code, message) = match rand::random_range(0..4u8) {
                0 => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_001",
                    "An internal error occurred",
                ),
                1 => (StatusCode::BAD_GATEWAY, "INTERNAL_002", "Bad gateway"),
                2 => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_001",
                    "Service temporarily unavailable",
                ),
                _ => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "INTERNAL_004",
                    "Upstream timeout",
                ),
            };
            Failure::new(status, code, message)
        }
    }
}

/// Everything after authentication and injected faults. A slow fault is
/// served while the idempotency key is in flight, so duplicates see a 409.
async fn process(
    sim: &Arc<Sim>,
    account: usize,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
    slow: &mut Option<Duration>,
) -> Result<Response, Failure> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if is_idempotency_key(key) => Some(key),
            _ => {
                let details = [(
                    "Idempotency-Key".to_owned(),
                    vec!["must match ^[A-Za-z0-9_-]{1,255}$".to_owned()],
                )];
                return Err(Failure::validation(
                    "VALIDATION_006",
                    "Invalid Idempotency-Key header",
                    details.into_iter().collect(),
                ));
            }
        },
    };
    let parsed = parse_send(body);
    if !parsed.unknown_fields.is_empty() {
        sim.counters.unknown_fields.fetch_add(
            parsed.unknown_fields.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::warn!(fields = ?parsed.unknown_fields, "send with fields Sent does not define");
    }
    let Some(request) = parsed.request else {
        return Err(shape_failure(&parsed.problems));
    };
    let valid = validate(&request, Utc::now())?;
    if let Some(failure) = magic_failure(&request) {
        return Err(failure);
    }
    let nulls = sim.config.null_optionals;

    if request.sandbox == Some(true) {
        bump(&sim.counters.sandbox_requests);
        let data = send_data(&valid, nulls, |_, _| Uuid::new_v4());
        let mut response = json(
            StatusCode::ACCEPTED,
            success_body(data, request_id, nulls),
            request_id,
            sim.limiter.peek(Some(account)),
        );
        response
            .headers_mut()
            .insert("x-sandbox", HeaderValue::from_static("true"));
        return Ok(response);
    }

    let in_flight = match idempotency_key {
        None => None,
        Some(key) => match sim.idempotency.begin(account, key) {
            Begin::Proceed(in_flight) => Some(in_flight),
            Begin::Replay { status, body } => {
                bump(&sim.counters.idempotent_replays);
                let mut response = json(status, body, request_id, sim.limiter.peek(Some(account)));
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            Begin::Conflict => {
                bump(&sim.counters.conflicts);
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    "CONFLICT_001",
                    "A request with this Idempotency-Key is already being processed",
                ));
            }
        },
    };
    if let Some(delay) = slow.take() {
        sleep_or_cancel(delay, &sim.cancel).await;
    }

    let count = valid.message_count() as u64;
    let rate = sim.limiter.take(account, count).map_err(|rate| {
        bump(&sim.counters.rate_limited);
        Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "BUSINESS_002",
            "Message rate limit exceeded",
        )
        .retry_after(rate.reset_secs.max(1))
    })?;

    let created_at = Utc::now();
    let shared_request_id: Arc<str> = Arc::from(request_id);
    let account_id = Arc::clone(&sim.accounts[account].account_id);
    let data = send_data(&valid, nulls, |to, choice| {
        let meta = Arc::new(MessageMeta {
            id: Uuid::new_v4(),
            account,
            account_id: Arc::clone(&account_id),
            to: to.to_owned(),
            channel: match choice {
                ChannelChoice::Auto => sim.auto_channel,
                ChannelChoice::Named(channel) => channel,
            },
            template_id: valid.template_id.clone(),
            template_name: valid.template_name.clone(),
            body: valid.body.clone(),
            subject: valid.subject.clone(),
            media_urls: valid.media_urls.clone(),
            request_id: Arc::clone(&shared_request_id),
            created_at,
            scheduled_at: valid.scheduled_at,
        });
        let id = meta.id;
        lifecycle::start(sim, meta, valid.forced);
        id
    });
    sim.counters
        .messages_created
        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    bump(&sim.counters.accepted_requests);

    let body = success_body(data, request_id, nulls);
    match in_flight {
        Some(in_flight) => {
            let before = in_flight.complete(StatusCode::ACCEPTED, body.clone());
            if before.0 == 0 {
                bump(&sim.counters.distinct_idempotency_keys);
            } else {
                bump(&sim.counters.accepted_twice);
            }
        }
        None => bump(&sim.counters.sends_without_idempotency_key),
    }
    Ok(json(StatusCode::ACCEPTED, body, request_id, rate))
}

/// The 202's `data`, creating one message id per recipient and channel.
/// Where Sent picks the channel, `channel` and `body` are `null`; with
/// `nulls` every optional member is, except `message_id`.
fn send_data(
    valid: &ValidSend,
    nulls: bool,
    mut create: impl FnMut(&str, ChannelChoice) -> Uuid,
) -> SendData {
    let mut recipients = Vec::with_capacity(valid.message_count());
    for to in &valid.to {
        for &choice in &valid.channels {
            let message_id = create(to, choice).to_string();
            let named = match choice {
                ChannelChoice::Named(channel) if !nulls => Some(channel),
                _ => None,
            };
            recipients.push(Recipient {
                message_id: Some(message_id),
                to: (!nulls).then(|| to.clone()),
                channel: named,
                body: named.and_then(|_| valid.body.as_deref().map(str::to_owned)),
            });
        }
    }
    SendData {
        status: (!nulls).then_some("QUEUED"),
        template_id: valid
            .template_id
            .as_deref()
            .filter(|_| !nulls)
            .map(str::to_owned),
        template_name: valid
            .template_name
            .as_deref()
            .filter(|_| !nulls)
            .map(str::to_owned),
        recipients: Some(recipients),
        scheduled_at: valid.scheduled_at.map(rfc3339),
    }
}

pub(crate) async fn get(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    bump(&sim.counters.requests);
    let nulls = sim.config.null_optionals;
    let request_id = new_request_id();
    let account = match authenticate(&sim, &headers) {
        Ok(account) => account,
        Err(failure) => {
            return failure.into_response(&request_id, sim.limiter.peek(None), nulls);
        }
    };
    let rate = sim.limiter.peek(Some(account));
    let info = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| sim.store.info(&id, account));
    match info {
        Some(info) => json(
            StatusCode::OK,
            success_body(info, request_id.as_str(), nulls),
            &request_id,
            rate,
        ),
        None => Failure::new(StatusCode::NOT_FOUND, "RESOURCE_001", "Message not found")
            .into_response(&request_id, rate, nulls),
    }
}
