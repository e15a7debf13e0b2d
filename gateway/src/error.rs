//! The gateway's one error type, mapped to HTTP in one place.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::domain::MessageStatus;
use serde::Serialize;
use utoipa::ToSchema;

/// Field name -> its problems, as in the original integration's marshmallow errors.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// The stable machine code of an error. Clients switch on this.
///
/// | code | status | |
/// | --- | --- | --- |
/// | `validation_error` | 400 | a field is wrong; `messages` names each |
/// | `malformed_json` | 400 | the body is not a JSON object |
/// | `bad_request` | 400 | a request the framework could not read (e.g. a bad query string) |
/// | `unauthorized` | 401 | missing or invalid API key |
/// | `invalid_signature` | 401 | a webhook's signature or timestamp is wrong |
/// | `not_found` | 404 | unknown route, or a message that is not the caller's |
/// | `method_not_allowed` | 405 | the route exists with another method |
/// | `idempotency_conflict` | 409 | `Idempotency-Key` reused with a different body |
/// | `not_cancellable` | 409 | the message was already handed to Sent (or is final); `status` says where it is |
/// | `payload_too_large` | 413 | body over `MAX_BODY_BYTES` (2 MiB) |
/// | `unsupported_media_type` | 415 | not `application/json` |
/// | `rate_limited` | 429 | see `Retry-After` and `retry_after` |
/// | `service_unavailable` | 503 | Postgres or Redis is down; see `Retry-After` |
/// | `timeout` | 503 | the request took longer than `REQUEST_TIMEOUT_SECS` |
/// | `internal_error` | 500 | a bug |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    MalformedJson,
    BadRequest,
    Unauthorized,
    InvalidSignature,
    NotFound,
    MethodNotAllowed,
    IdempotencyConflict,
    NotCancellable,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    ServiceUnavailable,
    Timeout,
    InternalError,
}

impl ErrorCode {
    /// The code as it is written in a body.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Every error response of every route.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"error": "Validation error", "code": "validation_error",
    "messages": {"phone_number": ["E.164 format required"]}}))]
pub struct ErrorBody {
    /// A sentence for people. It may change; switch on `code`.
    pub error: String,
    pub code: ErrorCode,
    /// `validation_error` only: each field (`channels.1` for an item of a
    /// list, `parameters.name` for a map entry) and its problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, value_type = BTreeMap<String, Vec<String>>)]
    pub messages: Option<FieldErrors>,
    /// `rate_limited` only: seconds until a retry can succeed, as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, minimum = 0)]
    pub retry_after: Option<u64>,
    /// `not_cancellable` only: the message's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub status: Option<MessageStatus>,
}

impl ErrorBody {
    fn new(error: impl Into<String>, code: ErrorCode) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            code,
            messages: None,
            retry_after: None,
            status: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation error")]
    Validation(FieldErrors),
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("webhook signature rejected: {0}")]
    BadSignature(&'static str),
    #[error("not found")]
    NotFound,
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    /// The message is past the point where it can be cancelled.
    #[error("message can no longer be cancelled ({0})")]
    NotCancellable(common::domain::MessageStatus),
    #[error("body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after: u64 },
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, problem: impl Into<String>) -> ApiError {
        ApiError::Validation(BTreeMap::from([(field.to_owned(), vec![problem.into()])]))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::IdempotencyConflict | ApiError::NotCancellable(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code clients switch on.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation(_) => ErrorCode::ValidationError,
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::BadSignature(_) => ErrorCode::InvalidSignature,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            ApiError::NotCancellable(_) => ErrorCode::NotCancellable,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The body. 5xx bodies say nothing internal.
    pub fn body(&self) -> ErrorBody {
        let error = match self {
            ApiError::Validation(_) => "Validation error".to_owned(),
            ApiError::MalformedJson(detail) => format!("Malformed JSON body: {detail}"),
            ApiError::Unauthorized => "Missing or invalid API key".to_owned(),
            ApiError::BadSignature(reason) => format!("Invalid webhook signature ({reason})"),
            ApiError::NotFound => "Not found".to_owned(),
            ApiError::IdempotencyConflict => {
                "Idempotency-Key was already used with a different request".to_owned()
            }
            ApiError::NotCancellable(status) => {
                let why = match status {
                    MessageStatus::Sending => {
                        "a send attempt has started, and Sent may already have it"
                    }
                    MessageStatus::Accepted | MessageStatus::Scheduled | MessageStatus::Sent => {
                        "it has been handed to Sent, whose API has no cancel call"
                    }
                    _ => "it is already final",
                };
                format!("The message can no longer be cancelled: {why} (status {status})")
            }
            ApiError::PayloadTooLarge => "Request body too large".to_owned(),
            ApiError::UnsupportedMediaType => "Content-Type must be application/json".to_owned(),
            ApiError::RateLimited { .. } => "Rate limit exceeded".to_owned(),
            ApiError::Unavailable(dependency) => {
                format!("Service temporarily unavailable ({dependency})")
            }
            ApiError::Internal(_) => "Internal server error".to_owned(),
        };
        let mut body = ErrorBody::new(error, self.code());
        match self {
            ApiError::Validation(messages) => body.messages = Some(messages.clone()),
            ApiError::RateLimited { retry_after } => body.retry_after = Some(*retry_after),
            ApiError::NotCancellable(status) => body.status = Some(*status),
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            ApiError::Unavailable(dependency) => {
                tracing::warn!(dependency, "dependency unavailable")
            }
            _ => {}
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let ApiError::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// Connection trouble is an outage (503), and so is what a server says of its
/// own state: shutting down or starting (class 57, also a replica cancelling a
/// query that conflicts with replay), out of resources (53), a connection
/// failure (08), a serialization failure or recovery conflict (40001), a
/// write reaching a read-only server (25006). Anything else from the
/// database is a bug (500).
impl From<&sqlx::Error> for ApiError {
    fn from(error: &sqlx::Error) -> ApiError {
        match error {
            sqlx::Error::Database(e)
                if e.code().is_some_and(|code| {
                    ["57", "53", "08"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "40001"
                        || code == "25006"
                }) =>
            {
                tracing::warn!(error = %e, "postgres unavailable");
                ApiError::Unavailable("postgres")
            }
            sqlx::Error::Database(e) => ApiError::Internal(e.to_string()),
            sqlx::Error::RowNotFound => ApiError::NotFound,
            other => {
                tracing::warn!(error = %other, "postgres error");
                ApiError::Unavailable("postgres")
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::from(&error)
    }
}

/// A group-committed write's error, shared by its batch.
impl From<common::group_commit::CommitError> for ApiError {
    fn from(error: common::group_commit::CommitError) -> ApiError {
        ApiError::from(&*error)
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> ApiError {
        tracing::warn!(error = %error, "redis error");
        ApiError::Unavailable("redis")
    }
}

/// The error body for a bare status, used for responses the framework
/// makes itself (unknown route, wrong method, timeouts).
pub fn status_body(status: StatusCode) -> ErrorBody {
    let (error, code) = match status {
        StatusCode::NOT_FOUND => ("Not found", ErrorCode::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => ("Method not allowed", ErrorCode::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => ("Request body too large", ErrorCode::PayloadTooLarge),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "Content-Type must be application/json",
            ErrorCode::UnsupportedMediaType,
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
            "Service temporarily unavailable (timeout)",
            ErrorCode::Timeout,
        ),
        s if s.is_server_error() => ("Internal server error", ErrorCode::InternalError),
        _ => ("Bad request", ErrorCode::BadRequest),
    };
    ErrorBody::new(error, code)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    /// The errors of a real server, mapped: what it says of its own state is
    /// an outage, a bad statement a bug.
    #[tokio::test]
    async fn a_servers_state_is_an_outage_and_a_bad_statement_a_bug() {
        let mut conn = sqlx::PgConnection::connect(&common::test_support::admin_url())
            .await
            .unwrap();
        sqlx::raw_sql("SET statement_timeout = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        let canceled = sqlx::query("SELECT pg_sleep(1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(
            matches!(ApiError::from(&canceled), ApiError::Unavailable("postgres")),
            "{canceled}"
        );
        sqlx::raw_sql("RESET statement_timeout; SET default_transaction_read_only = on")
            .execute(&mut conn)
            .await
            .unwrap();
        let read_only = sqlx::query("CREATE TEMP TABLE t (x int)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(
            matches!(
                ApiError::from(&read_only),
                ApiError::Unavailable("postgres")
            ),
            "{read_only}"
        );
        let bug = sqlx::query("SELECT 1 / 0")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(
            matches!(ApiError::from(&bug), ApiError::Internal(_)),
            "{bug}"
        );
    }
}
