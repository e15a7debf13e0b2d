//! Submitting messages and reading their status.

mod types;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use common::domain::{Channel, MessageId, MessageStatus, PhoneNumber, TemplateRef};
use common::store::{IdempotencyClaim, MessageFilter, NewMessage, Submission, SubmitOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
pub use types::*;

use crate::app::AppState;
use crate::auth::Client;
use crate::error::{ApiError, FieldErrors};
use crate::json::JsonObject;
use crate::openapi::{InvalidQuery, MessageNotFound, NotCancellable, ReadErrors, SubmitErrors};
use crate::rate_limit;
use crate::validation::{
    self, BATCH_MAX, Fields, IDEMPOTENCY_KEY_MAX, SHORTCUT_FIELD_MAX, SendRequest, SendRules,
};

/// Send a message.
///
/// Validates, stores and queues the message and answers once it is durable;
/// delivery happens in the background.
#[utoipa::path(post, path = "/api/messages/send", tag = "messages", operation_id = "sendMessage",
    params(IdempotencyKey),
    request_body(content = SendBody, examples(
        ("minimal" = (summary = "A template by name", value = json!({"phone_number": "+14155550123",
            "template_name": "welcome", "parameters": {"name": "Ada"}}))),
        ("full" = (summary = "Every field but scheduled_at", value = json!({"phone_number": "+14155550123",
            "template_id": "tmpl_123", "template_name": "welcome", "parameters": {"name": "Ada"},
            "channels": ["whatsapp", "sms"], "sandbox": false,
            "callback_url": "https://client.example/hooks/sent-status", "metadata": {"order": "A-17"}}))),
    )),
    responses((status = 202, description = "Stored and queued (or, with `Idempotent-Replayed: true`, the first answer to this `Idempotency-Key`)",
            body = Accepted, headers(
                ("Location" = String, description = "`/api/messages/{message_id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is a repeat's first answer; absent otherwise"))),
        SubmitErrors))]
pub async fn send(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request = validation::send_request(&body, &rules(&state), Utc::now())
        .map_err(ApiError::Validation)?;
    accept_one(&state, client, &headers, "send", request).await
}

/// Send the welcome template on WhatsApp.
#[utoipa::path(post, path = "/api/messages/welcome", tag = "messages", operation_id = "sendWelcome",
    params(IdempotencyKey),
    request_body(content = WelcomeBody, example = json!({"phone_number": "+14155550123", "name": "Ada"})),
    responses((status = 202, description = "Stored and queued (or, with `Idempotent-Replayed: true`, the first answer to this `Idempotency-Key`)",
            body = Accepted, headers(
                ("Location" = String, description = "`/api/messages/{message_id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is a repeat's first answer; absent otherwise"))),
        SubmitErrors))]
pub async fn welcome(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body, &["phone_number", "name"]);
    let phone = f.phone("phone_number");
    let name = f
        .string("name", false, Some(100))
        .unwrap_or_else(|| "Valued Customer".to_owned());
    let phone = f.finish(phone).map_err(ApiError::Validation)?;
    let templates = &state.config.gateway.templates;
    let request = shortcut(
        phone,
        &templates.welcome,
        [("name", name)],
        vec![Channel::Whatsapp],
    );
    accept_one(&state, client, &headers, "welcome", request).await
}

/// Send the order confirmation template on SMS and WhatsApp.
#[utoipa::path(post, path = "/api/messages/order-confirmation", tag = "messages",
    operation_id = "sendOrderConfirmation", params(IdempotencyKey),
    request_body(content = OrderConfirmationBody,
        example = json!({"phone_number": "+14155550123", "order_number": "A-17", "total": "$42.00"})),
    responses((status = 202, description = "Stored and queued (or, with `Idempotent-Replayed: true`, the first answer to this `Idempotency-Key`)",
            body = Accepted, headers(
                ("Location" = String, description = "`/api/messages/{message_id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is a repeat's first answer; absent otherwise"))),
        SubmitErrors))]
pub async fn order_confirmation(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body, &["phone_number", "order_number", "total"]);
    let phone = f.phone("phone_number");
    let order_number = f.string("order_number", true, Some(SHORTCUT_FIELD_MAX));
    let total = f.string("total", true, Some(SHORTCUT_FIELD_MAX));
    let (phone, (order_number, total)) = f
        .finish(phone.zip(order_number.zip(total)))
        .map_err(ApiError::Validation)?;
    let templates = &state.config.gateway.templates;
    let request = shortcut(
        phone,
        &templates.order_confirmation,
        [("order_number", order_number), ("total", total)],
        vec![Channel::Sms, Channel::Whatsapp],
    );
    accept_one(&state, client, &headers, "order-confirmation", request).await
}

/// Send up to 1000 messages.
///
/// All valid items are stored in one transaction; each item gets its own
/// result, in order, so one bad item does not sink the others. Each message
/// counts against the key's sending rate limit: the items past what is left
/// of it get a `rate_limited` result with `retry_after`, and a batch with no
/// room at all gets `429`.
#[utoipa::path(post, path = "/api/messages/batch", tag = "messages", operation_id = "sendBatch",
    params(IdempotencyKey),
    request_body(content = BatchBody, example = json!({"messages": [
        {"phone_number": "+14155550123", "template_name": "welcome", "parameters": {"name": "Ada"}},
        {"phone_number": "+442071838750", "template_id": "tmpl_123", "channels": ["sms"]}]})),
    responses(
        (status = 202, description = "One result per item, in order (or, with `Idempotent-Replayed: true`, the first answer to this `Idempotency-Key`)",
            body = BatchAccepted, headers(
                ("Idempotent-Replayed" = String, description = "`true` when this is a repeat's first answer; absent otherwise"))),
        SubmitErrors))]
pub async fn batch(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let mut f = Fields::new(&body, &["messages"]);
    let items = match body.get("messages") {
        Some(Value::Array(items)) if (1..=BATCH_MAX).contains(&items.len()) => Some(items),
        Some(Value::Array(_)) => {
            f.error(
                "messages",
                format!("Length must be between 1 and {BATCH_MAX}."),
            );
            None
        }
        None => {
            f.error("messages", validation::MISSING);
            None
        }
        Some(_) => {
            f.error("messages", "Not a valid list.");
            None
        }
    };
    let items = f.finish(items).map_err(ApiError::Validation)?;

    let now = Utc::now();
    let rules = rules(&state);
    let checked: Vec<Result<SendRequest, FieldErrors>> = items
        .iter()
        .map(|item| match item.as_object() {
            Some(object) => validation::send_request(object, &rules, now),
            None => Err(FieldErrors::from([(
                "_item".to_owned(),
                vec!["Not a valid object.".to_owned()],
            )])),
        })
        .collect();

    // One unit of the sending budget per valid message: the request took
    // the first (the rate-limit layer, which answers 429 when there is none);
    // the valid items past what is left are refused one by one.
    let valid = checked.iter().filter(|r| r.is_ok()).count() as u32;
    let extra = valid.saturating_sub(1);
    let grant = rate_limit::take_messages(&state, &client, extra).await;
    let limited = ApiError::RateLimited {
        retry_after: grant.retry_after.map_or(1, |r| r.seconds()),
    };
    let mut room = 1 + grant.granted;
    let mut messages = Vec::new();
    let results: Vec<BatchResult> = checked
        .iter()
        .map(|result| match result {
            Ok(_) if room == 0 => BatchResult::Invalid(limited.body()),
            Ok(request) => {
                room -= 1;
                let message = new_message(request);
                let message_id = message.id;
                messages.push(message);
                BatchResult::Queued(BatchQueued {
                    message_id,
                    status: Queued::Queued,
                })
            }
            Err(errors) => BatchResult::Invalid(ApiError::Validation(errors.clone()).body()),
        })
        .collect();
    let canonical: Vec<Value> = checked
        .iter()
        .map(|r| match r {
            Ok(request) => serde_json::to_value(request).unwrap_or_default(),
            Err(errors) => json!({"invalid": errors}),
        })
        .collect();
    let answer = BatchAccepted {
        results,
        created_at: now,
    };
    let submission = submission(
        &client, &headers, "batch", &canonical, messages, now, &answer,
    )?;
    submit(&state, submission, None).await
}

/// A message's status and timeline.
#[utoipa::path(get, path = "/api/messages/{id}", tag = "messages", operation_id = "getMessage",
    params(("id" = String, Path, description = "The message id (`message_id`)")),
    responses((status = 200, description = "The message and its events", body = MessageDetail),
        MessageNotFound, ReadErrors))]
pub async fn get_one(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<MessageDetail>, ApiError> {
    let id = id.parse().map_err(|_| ApiError::NotFound)?;
    detail(&state, &client, id).await.map(Json)
}

async fn detail(
    state: &AppState,
    client: &Client,
    id: MessageId,
) -> Result<MessageDetail, ApiError> {
    let message = state
        .store
        .message(&client.name, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let events = state.store.events(id).await?;
    Ok(MessageDetail {
        message: message.into(),
        events: events.into_iter().map(Event::from).collect(),
    })
}

/// Cancel a message that has not been handed to Sent.
///
/// Sent's API has no cancel call, so a message can be cancelled only while
/// the gateway still holds it: `queued`, or `scheduled` (the gateway keeps a
/// scheduled message until its time, then hands it to Sent). Once a send
/// attempt has started it is too late: the answer is `409 not_cancellable`
/// with the message's status.
#[utoipa::path(post, path = "/api/messages/{id}/cancel", tag = "messages", operation_id = "cancelMessage",
    params(("id" = String, Path, description = "The message id (`message_id`)")),
    responses((status = 200, description = "Cancelled: the message and its events", body = MessageDetail),
        NotCancellable, MessageNotFound, ReadErrors))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
) -> Result<Json<MessageDetail>, ApiError> {
    let id = id.parse().map_err(|_| ApiError::NotFound)?;
    match state.store.cancel(&client.name, id).await? {
        None => Err(ApiError::NotFound),
        Some((status, false)) => Err(ApiError::NotCancellable(status)),
        Some((_, true)) => detail(&state, &client, id).await.map(Json),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub const LIST_DEFAULT: i64 = 50;
pub const LIST_MAX: i64 = 200;

/// The caller's messages, newest first.
///
/// Read from the read replica when the gateway has one, so a message
/// accepted a moment ago may not be listed yet; `GET /api/messages/{id}`
/// always has it.
#[utoipa::path(get, path = "/api/messages", tag = "messages", operation_id = "listMessages",
    params(ListParams),
    responses((status = 200, description = "A page of messages, without their events", body = MessageList),
        InvalidQuery, ReadErrors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Query(query): Query<ListQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let mut errors = FieldErrors::new();
    let mut bad =
        |field: &str, problem: String| errors.entry(field.to_owned()).or_default().push(problem);
    let status = query.status.as_deref().and_then(|s| {
        s.parse::<MessageStatus>()
            .map_err(|e| bad("status", e))
            .ok()
    });
    let since = query.since.as_deref().and_then(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                bad(
                    "since",
                    "Not a valid RFC 3339 date-time with offset.".into(),
                )
            })
            .ok()
    });
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => LIST_DEFAULT,
        Some(Ok(n)) if (1..=LIST_MAX).contains(&n) => n,
        Some(_) => {
            bad("limit", format!("Must be between 1 and {LIST_MAX}."));
            LIST_DEFAULT
        }
    };
    let before = query.cursor.as_deref().and_then(|c| {
        c.parse::<MessageId>()
            .map_err(|_| bad("cursor", "Not a valid cursor.".into()))
            .ok()
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = MessageFilter {
        status,
        since,
        before,
        limit,
    };
    let messages = state.store.reader().messages(&client.name, &filter).await?;
    let next_cursor = (messages.len() as i64 == limit)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    Ok(Json(MessageList {
        messages: messages.into_iter().map(Message::from).collect(),
        next_cursor,
    }))
}

fn rules(state: &AppState) -> SendRules<'_> {
    SendRules {
        allow_http_callbacks: state.allow_http_callbacks(),
        text_max_chars: state.config.gateway.text_max_chars,
        callback_policy: &state.config.callback_policy,
    }
}

fn shortcut<const N: usize>(
    phone_number: PhoneNumber,
    template: &TemplateRef,
    parameters: [(&str, String); N],
    channels: Vec<Channel>,
) -> SendRequest {
    SendRequest {
        phone_number,
        template: Some(template.clone()),
        text: None,
        media_urls: Vec::new(),
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        channels,
        scheduled_at: None,
        sandbox: false,
        callback_url: None,
        metadata: BTreeMap::new(),
    }
}

fn new_message(request: &SendRequest) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        phone_number: request.phone_number.clone(),
        template_id: request
            .template
            .as_ref()
            .and_then(|t| t.id())
            .map(str::to_owned),
        template_name: request
            .template
            .as_ref()
            .and_then(|t| t.name())
            .map(str::to_owned),
        parameters: json!(request.parameters),
        text: request.text.clone(),
        media_urls: request.media_urls.clone(),
        channels: request.channels.clone(),
        scheduled_at: request.scheduled_at,
        sandbox: request.sandbox,
        callback_url: request.callback_url.clone(),
        metadata: json!(request.metadata),
    }
}

async fn accept_one(
    state: &AppState,
    client: Client,
    headers: &HeaderMap,
    route: &str,
    request: SendRequest,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let message = new_message(&request);
    let location = format!("/api/messages/{}", message.id);
    let answer = Accepted {
        message_id: message.id,
        status: Queued::Queued,
        created_at: now,
    };
    let submission = submission(
        &client,
        headers,
        route,
        &request,
        vec![message],
        now,
        &answer,
    )?;
    submit(state, submission, Some(location)).await
}

fn submission(
    client: &Client,
    headers: &HeaderMap,
    route: &str,
    canonical_request: &impl serde::Serialize,
    messages: Vec<NewMessage>,
    created_at: DateTime<Utc>,
    answer: &impl serde::Serialize,
) -> Result<Submission, ApiError> {
    let idempotency = idempotency_key(headers)?.map(|key| {
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update(serde_json::to_vec(canonical_request).unwrap_or_default());
        IdempotencyClaim {
            key,
            route: route.to_owned(),
            request_hash: hasher.finalize().to_vec(),
        }
    });
    Ok(Submission {
        client: client.name.clone(),
        idempotency,
        messages,
        created_at,
        trace: common::telemetry::current_context(),
        response_status: StatusCode::ACCEPTED.as_u16(),
        // Kept for idempotent replays, which answer it as stored.
        response_body: serde_json::to_value(answer)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= IDEMPOTENCY_KEY_MAX
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::field(
            "Idempotency-Key",
            format!("Must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters."),
        )),
    }
}

async fn submit(
    state: &AppState,
    submission: Submission,
    location: Option<String>,
) -> Result<Response, ApiError> {
    let fresh_body = submission.response_body.clone();
    let (status, body, replayed) = match state.accepter.submit(submission).await? {
        SubmitOutcome::Stored => (StatusCode::ACCEPTED, fresh_body, false),
        SubmitOutcome::Replay { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED),
            body,
            true,
        ),
        SubmitOutcome::Conflict => return Err(ApiError::IdempotencyConflict),
    };
    // A replay's location is the first message's, so it is read off the body.
    let location = location.and(
        body["message_id"]
            .as_str()
            .map(|id| format!("/api/messages/{id}")),
    );
    let mut response = (status, Json(body)).into_response();
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}
