//! The gateway's one error type, mapped to HTTP in one place.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Field name -> its problems, as in the original integration's marshmallow errors.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

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
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_error",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadSignature(_) => "invalid_signature",
            ApiError::NotFound => "not_found",
            ApiError::IdempotencyConflict => "idempotency_conflict",
            ApiError::NotCancellable(_) => "not_cancellable",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body: `{"error", "code", "messages"?}`. 5xx bodies say nothing internal.
    pub fn body(&self) -> serde_json::Value {
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
                use common::domain::MessageStatus as S;
                let why = match status {
                    S::Sending => "a send attempt has started, and Sent may already have it",
                    S::Accepted | S::Scheduled | S::Sent => {
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
        let mut body = json!({"error": error, "code": self.code()});
        match self {
            ApiError::Validation(messages) => body["messages"] = json!(messages),
            ApiError::RateLimited { retry_after } => body["retry_after"] = json!(retry_after),
            ApiError::NotCancellable(status) => body["status"] = json!(status),
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

/// Connection trouble is an outage (503); anything else from the database is a bug (500).
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        match error {
            sqlx::Error::Database(e) => ApiError::Internal(e.to_string()),
            sqlx::Error::RowNotFound => ApiError::NotFound,
            other => {
                tracing::warn!(error = %other, "postgres error");
                ApiError::Unavailable("postgres")
            }
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> ApiError {
        tracing::warn!(error = %error, "redis error");
        ApiError::Unavailable("redis")
    }
}

/// A JSON error body for a bare status, used for responses the framework
/// makes itself (unknown route, wrong method, timeouts).
pub fn status_body(status: StatusCode) -> serde_json::Value {
    let (error, code) = match status {
        StatusCode::NOT_FOUND => ("Not found", "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => ("Method not allowed", "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => ("Request body too large", "payload_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "Content-Type must be application/json",
            "unsupported_media_type",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("Service temporarily unavailable (timeout)", "timeout")
        }
        s if s.is_server_error() => ("Internal server error", "internal_error"),
        _ => ("Bad request", "bad_request"),
    };
    json!({"error": error, "code": code})
}
