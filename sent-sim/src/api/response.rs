//! The v3 envelope on the wire: success and failure bodies, and the headers
//! every answer carries.

use std::borrow::Cow;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde::Serialize;

pub(crate) use super::wire::Details;
use super::wire::{API_VERSION, ApiError, Envelope, Meta};
use crate::store::RateInfo;
use crate::util::rfc3339;

pub(crate) fn meta(request_id: &str) -> Meta {
    Meta {
        request_id: request_id.to_owned(),
        timestamp: rfc3339(Utc::now()),
        version: API_VERSION,
    }
}

/// A JSON answer with `X-Request-Id` and the `X-RateLimit-*` headers.
pub(crate) fn json(status: StatusCode, body: Bytes, request_id: &str, rate: RateInfo) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset_secs));
    response
}

/// A success envelope around `data`, serialized. With `nulls`
/// (`SimConfig::null_optionals`) `success` and `meta` are `null`.
pub(crate) fn success_body<T: Serialize>(data: T, request_id: &str, nulls: bool) -> Bytes {
    let envelope = Envelope {
        success: (!nulls).then_some(true),
        data: Some(data),
        error: None,
        meta: (!nulls).then(|| meta(request_id)),
    };
    serde_json::to_vec(&envelope)
        .expect("envelopes serialize")
        .into()
}

/// An error answer: status, Sent's code, message and optional field details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub details: Option<Details>,
    pub retry_after: Option<u64>,
}

impl Failure {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// A 400 with field details.
    pub fn validation(code: &'static str, message: &'static str, details: Details) -> Self {
        Failure {
            details: Some(details),
            ..Failure::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The failure envelope. With `nulls` (`SimConfig::null_optionals`)
    /// `success`, `meta`, `error.details` and `error.doc_url` are `null`;
    /// `error.code` and `error.message` stay.
    pub fn into_response(self, request_id: &str, rate: RateInfo, nulls: bool) -> Response {
        let error = ApiError {
            code: Some(self.code.to_owned()),
            message: Some(self.message.into_owned()),
            details: self.details.filter(|_| !nulls),
            doc_url: (!nulls).then(|| format!("https://docs.sent.dm/errors/{}", self.code)),
        };
        let envelope = Envelope::<()> {
            success: (!nulls).then_some(false),
            data: None,
            error: Some(error),
            meta: (!nulls).then(|| meta(request_id)),
        };
        let body = serde_json::to_vec(&envelope).expect("envelopes serialize");
        let mut response = json(self.status, body.into(), request_id, rate);
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
