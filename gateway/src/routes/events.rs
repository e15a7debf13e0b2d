//! `GET /api/events`: the pull API, for consumers that prefer to poll the
//! verified events the gateway stored (a batch job, a bot behind no public
//! URL) rather than receive them forwarded.
//!
//! At least once, in order, resumable: a page is the next events of one
//! source after `after`, and `next_cursor` is where the following page
//! starts. A consumer stores the cursor only after it has handled the page;
//! after a crash it asks again from the stored cursor and sees the events it
//! had not confirmed again (deduplicate on `event_id`). The cursor never
//! skips an event that committed late (`common::store::pull`). Events stay
//! readable for the inbox's retention (`INBOX_RETENTION_DAYS` after they
//! were processed).
//!
//! `source=inbound` is the replies to messages (Sent's `message.received`),
//! in the order the worker routed them, each as the `message.inbound` body
//! its callback carries: a tenant reads those routed to it, an admin all of
//! them, unroutable ones (`routed_to: null`) included. Provider sources are
//! for admin keys, and tenant keys granted them (`gateway keys create NAME
//! --pull stripe,telegram`).

use axum::Json;
use axum::extract::{Extension, Query, State};
use chrono::{DateTime, Utc};
use common::domain::Provider;
use common::sent::webhook::read_inbound;
use common::store::{EventCursor, PulledEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Client;
use crate::error::{ApiError, FieldErrors};
use crate::openapi::{InvalidQuery, ReadErrors};

pub const PAGE_DEFAULT: i64 = 100;
pub const PAGE_MAX: i64 = 1000;

/// The query of `GET /api/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Whose events: `stripe`, `telegram` or `sent` (admin keys, and keys
    /// granted that source), or
    /// `inbound`, the replies to messages (a tenant's own; an admin's all).
    #[param(value_type = String, pattern = "^(stripe|telegram|sent|inbound)$")]
    pub source: Option<String>,
    /// The previous page's `next_cursor`; from the first stored event without it.
    #[param(value_type = Option<String>, pattern = "^[0-9]+-[0-9]+$")]
    pub after: Option<String>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<String>,
}

/// One stored event, as the provider sent it.
#[derive(Serialize, ToSchema)]
pub struct StoredEvent {
    /// This event's position; a page's last one is its `next_cursor`.
    #[schema(example = "812-7")]
    pub cursor: String,
    #[schema(example = "stripe")]
    pub source: String,
    /// The provider's event id (Stripe's `id`, Telegram's `update_id`, Sent's
    /// event id): deduplicate on it.
    #[schema(example = "evt_1Q")]
    pub event_id: String,
    #[schema(example = "invoice.paid")]
    pub event_type: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The provider's body (its signature was verified when it arrived);
    /// for `inbound`, the `message.inbound` body: an `InboundCallback`
    /// (`#/components/schemas/InboundCallback`).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `inbound` only: the tenant (API key name) the reply was routed to,
    /// `null` when it was unroutable (only admins see those).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = true, example = "acme")]
    pub routed_to: Option<Option<String>>,
}

/// Where the pull API reads: a provider's stored events, or the replies.
#[derive(Clone, Copy)]
enum Source {
    Provider(Provider),
    Inbound,
}

pub const INBOUND: &str = "inbound";

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Pass as `after` for the next page: the last event's cursor, or the
    /// `after` given when there is nothing new yet (keep polling with it).
    #[schema(example = "812-7")]
    pub next_cursor: String,
    /// A full page: more events are likely ready now.
    pub has_more: bool,
}

/// Stored events of one source, oldest first (admin keys and keys granted
/// the source; `inbound`: any key, a tenant reading its own replies).
#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "listEvents",
    params(EventsQuery),
    responses((status = 200, description = "The next events after `after`", body = EventPage),
        InvalidQuery, ReadErrors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<Client>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let mut errors = FieldErrors::new();
    let mut bad =
        |field: &str, problem: String| errors.entry(field.to_owned()).or_default().push(problem);
    let source = match query.source.as_deref() {
        Some(INBOUND) => Some(Source::Inbound),
        Some(other) => match other.parse::<Provider>() {
            Ok(provider) => Some(Source::Provider(provider)),
            Err(_) => {
                bad("source", "One of stripe, telegram, sent, inbound.".into());
                None
            }
        },
        None => {
            bad(
                "source",
                "Required: stripe, telegram, sent or inbound.".into(),
            );
            None
        }
    };
    // Provider events are the operator's: a tenant reads only the sources
    // its key was granted (`gateway keys create --pull`).
    if let Some(Source::Provider(provider)) = source
        && !client.may_pull(provider)
    {
        bad(
            "source",
            format!("Only admin keys, and keys granted {provider}, read its events."),
        );
    }
    let after = match query.after.as_deref().map(str::parse::<EventCursor>) {
        None => EventCursor::default(),
        Some(Ok(cursor)) => cursor,
        Some(Err(())) => {
            bad("after", "Not a cursor this API returned.".into());
            EventCursor::default()
        }
    };
    let limit = match query.limit.as_deref().map(str::parse::<i64>) {
        None => PAGE_DEFAULT,
        Some(Ok(n)) if (1..=PAGE_MAX).contains(&n) => n,
        Some(_) => {
            bad("limit", format!("Must be between 1 and {PAGE_MAX}."));
            PAGE_DEFAULT
        }
    };
    let (Some(source), true) = (source, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let rows = match source {
        Source::Provider(provider) => state.store.pull_events(provider, after, limit).await?,
        Source::Inbound => {
            let scope = client.dashboard_scope();
            state.store.pull_replies(scope, after, limit).await?
        }
    };
    let next_cursor = rows.last().map_or(after, |row| row.cursor()).to_string();
    let has_more = rows.len() as i64 == limit;
    let events = rows
        .into_iter()
        .map(|row| match source {
            Source::Provider(_) => provider_event(row),
            Source::Inbound => reply_event(row),
        })
        .collect();
    Ok(Json(EventPage {
        events,
        next_cursor,
        has_more,
    }))
}

/// A provider's event, its body as the provider sent it.
fn provider_event(row: PulledEvent) -> StoredEvent {
    StoredEvent {
        cursor: row.cursor().to_string(),
        source: row.provider.as_str().to_owned(),
        event_id: row.event_id,
        event_type: row.event_type,
        received_at: row.received_at,
        // Verified as a JSON object when it arrived.
        payload: serde_json::from_slice(&row.body).unwrap_or(Value::Null),
        routed_to: None,
    }
}

/// A reply, as its `message.inbound` body.
fn reply_event(row: PulledEvent) -> StoredEvent {
    StoredEvent {
        cursor: row.cursor().to_string(),
        source: INBOUND.to_owned(),
        // Routed because it read as an inbound message.
        payload: read_inbound(&row.body, row.received_at).map_or(Value::Null, |inbound| {
            inbound.payload(&row.event_id, row.message_id.as_deref())
        }),
        event_id: row.event_id,
        event_type: Some("message.inbound".to_owned()),
        received_at: row.received_at,
        routed_to: Some(row.reply_client),
    }
}
