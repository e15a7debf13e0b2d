//! `GET /dashboard/lookup?q=`: a message by its id, or a phone number's
//! newest messages, each with its timeline (send attempts included) and its
//! status callbacks with their attempts. What an operator reaches for first
//! when a customer calls. Always needs an API key, even with
//! `DASHBOARD_PUBLIC=true` (phone numbers and message contents are not for a
//! public page); a tenant key sees its own messages, an admin key everyone's.

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use common::domain::{MessageId, PhoneNumber};
use common::store::Lookup;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::messages::{Event, MessageDetail};
use crate::app::AppState;
use crate::auth::Client;
use crate::error::ApiError;
use crate::openapi::{InvalidQuery, ReadErrors};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// A message id (26-character ULID) or an E.164 phone number.
    #[param(value_type = String, example = "+14155550123")]
    pub q: Option<String>,
}

/// What the lookup found, newest first (at most 10 for a phone number).
#[derive(Serialize, ToSchema)]
pub struct LookupResult {
    /// Whose messages were searched: the calling key's name (a tenant key),
    /// or null for every client's (an admin key).
    pub client: Option<String>,
    pub messages: Vec<LookedUpMessage>,
}

#[derive(Serialize, ToSchema)]
pub struct LookedUpMessage {
    #[serde(flatten)]
    pub detail: MessageDetail,
    /// The client (API key name) that sent it.
    pub client: String,
    /// Its status callbacks, oldest first, each with every attempt.
    pub callbacks: Vec<CallbackView>,
}

#[derive(Serialize, ToSchema)]
pub struct CallbackView {
    /// The callback's `webhook-id`.
    pub webhook_id: String,
    /// The status it reports.
    pub status: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub attempts: Vec<CallbackAttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct CallbackAttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// A message by id, or a phone number's messages, with timelines and callbacks.
#[utoipa::path(get, path = "/dashboard/lookup", tag = "dashboard", operation_id = "dashboardLookup",
    params(LookupQuery),
    responses((status = 200, description = "The messages found (none is an empty list)", body = LookupResult),
        InvalidQuery, ReadErrors))]
pub async fn lookup(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Query(query): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    let q = query.q.as_deref().map(str::trim).unwrap_or_default();
    let lookup = if let Ok(id) = q.parse::<MessageId>() {
        Lookup::Message(id)
    } else if let Ok(phone) = PhoneNumber::parse(q) {
        Lookup::Phone(phone)
    } else {
        return Err(ApiError::field(
            "q",
            "A message id or an E.164 phone number (+14155550123).",
        ));
    };
    let scope = client.dashboard_scope();
    let store = &state.store;
    let mut messages = Vec::new();
    for id in store.lookup_message_ids(&lookup, scope).await? {
        let Some(message) = store.message_by_id(id).await? else {
            continue; // purged in between
        };
        let events = store.events(id).await?;
        let mut callbacks = Vec::new();
        for callback in store.callbacks_for_message(id).await? {
            let attempts = store.callback_attempts(callback.id).await?;
            callbacks.push(CallbackView {
                webhook_id: callback.webhook_id,
                status: callback.status,
                state: callback.state,
                created_at: callback.created_at,
                attempts: attempts
                    .into_iter()
                    .map(|a| CallbackAttemptView {
                        attempt: a.attempt,
                        started_at: a.started_at,
                        duration_ms: a.duration_ms,
                        status_code: a.status_code,
                        error: a.error,
                    })
                    .collect(),
            });
        }
        messages.push(LookedUpMessage {
            client: message.client.clone(),
            detail: MessageDetail {
                message: message.into(),
                events: events.into_iter().map(Event::from).collect(),
            },
            callbacks,
        });
    }
    let result = LookupResult {
        client: scope.map(str::to_owned),
        messages,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(result)).into_response())
}
