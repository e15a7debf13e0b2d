//! The OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! Paths come from the handlers' `#[utoipa::path]` annotations, gathered by
//! [`crate::app::routes`], the same function that registers the routes with
//! the router: a route is documented because it is registered, and the other
//! way round. This module holds the shared parts: the error shape and its
//! codes, the reusable error responses, the security schemes, the request
//! headers, and the schemas of bodies whose handlers work on raw JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Required, SecurityRequirement,
};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::app::{self, Access};
use crate::error::ApiError;

/// Names of the security schemes.
pub const BEARER: &str = "bearer";
pub const API_KEY: &str = "api_key";

const DESCRIPTION: &str = "\
A messaging gateway in front of the Sent API (SMS, WhatsApp, RCS). POST a \
message and get `202 Accepted` with its id once it is durable; workers deliver \
it to Sent with retries, and Sent's signed delivery webhooks update its status \
and timeline, which `GET /api/messages/{id}` returns.

**Authentication**: every `/api/...` route needs an API key, as \
`Authorization: Bearer <key>` or `X-API-Key: <key>`.

**Errors** are always JSON, `{\"error\": sentence, \"code\": stable code, \
\"messages\"?: {field: [problems]}}`, on every route including unknown routes \
(`404 not_found`) and wrong methods (`405 method_not_allowed`). Switch on \
`code`, never on `error`. A 5xx never carries internals.

**Rate limits** per client (API key, else IP): `POST /api/messages/...` 10 per \
minute, `/webhooks/*` 100, everything else 100 (configurable; off in the \
testing profile). A limited request gets `429` with `Retry-After`.

Every response carries `X-Request-Id` (the caller's, or a new one) and the \
security headers (`Strict-Transport-Security`, `Content-Security-Policy`, \
`X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`).";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sent-gateway",
        description = DESCRIPTION,
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorCode, MessageStatus, Channel)),
    modifiers(&Components),
    tags(
        (name = "messages", description = "Sending messages and reading their status. API key required."),
        (name = "webhooks", description = "Signed provider webhooks, stored in the inbox and processed by the worker."),
        (name = "operations", description = "Health, metrics, the service index and this document."),
        (name = "dashboard", description = "The built-in status page and its data."),
    )
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`] plus every registered route.
pub fn document() -> Document {
    let mut doc = app::routes(|group, _| group).into_openapi();
    // Every response, errors included, carries the request id.
    let request_id = HeaderBuilder::new()
        .schema(String::schema())
        .description(Some(
            "The request's id: the caller's `X-Request-Id`, or a new one.",
        ))
        .build();
    let mut add = |response: &mut RefOr<ApiResponse>| {
        if let RefOr::T(response) = response {
            response
                .headers
                .insert("X-Request-Id".to_owned(), request_id.clone());
        }
    };
    for item in doc.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation
                .responses
                .responses
                .values_mut()
                .for_each(&mut add);
        }
    }
    if let Some(components) = doc.components.as_mut() {
        components.responses.values_mut().for_each(&mut add);
    }
    doc
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json",
            body = Object),
        RateLimitedErrors,
    ))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// Sets each operation's security from the access of its group of routes,
/// so the document says what the router's layers do.
pub fn secure<S>(
    mut router: utoipa_axum::router::OpenApiRouter<S>,
    access: Access,
) -> utoipa_axum::router::OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let key = [
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::new(API_KEY, Vec::<String>::new()),
    ];
    let security = match access {
        Access::ApiKey => Some(key.to_vec()),
        // `{}`: no key needed when DASHBOARD_PUBLIC=true.
        Access::Dashboard => Some([key.to_vec(), vec![SecurityRequirement::default()]].concat()),
        Access::Open => None,
    };
    for item in router.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.security = security.clone();
        }
    }
    router
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Security schemes and the reusable error responses.
struct Components;

impl Modify for Components {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <API key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same API key in the `X-API-Key` header.",
            ))),
        );
        for (name, response) in error_responses() {
            components.responses.insert(name, response);
        }
    }
}

// ---------------------------------------------------------------- errors

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
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::ValidationError,
        ErrorCode::MalformedJson,
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidSignature,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::IdempotencyConflict,
        ErrorCode::NotCancellable,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Timeout,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Every error response of every route.
#[derive(ToSchema)]
#[schema(example = json!({"error": "Validation error", "code": "validation_error",
    "messages": {"phone_number": ["E.164 format required"]}}))]
pub struct ErrorBody {
    /// A sentence for people. It may change; switch on `code`.
    pub error: String,
    pub code: ErrorCode,
    /// `validation_error` only: each field (`channels.1` for an item of a
    /// list, `parameters.name` for a map entry) and its problems.
    #[schema(required = false)]
    pub messages: BTreeMap<String, Vec<String>>,
    /// `rate_limited` only: seconds until a retry can succeed, as `Retry-After`.
    #[schema(required = false, minimum = 0)]
    pub retry_after: u64,
    /// `not_cancellable` only: the message's status.
    #[schema(required = false)]
    pub status: MessageStatus,
}

/// A reusable error response: [`ErrorBody`] with `code` narrowed to `codes`.
fn error_response(
    description: &str,
    codes: &[ErrorCode],
    retry_after: Option<&str>,
    example: Value,
) -> RefOr<ApiResponse> {
    let narrowed = ObjectBuilder::new()
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().map(|c| c.as_str()))),
        )
        .build();
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorBody"))
        .item(narrowed)
        .build();
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::T(Schema::AllOf(schema))))
            .example(Some(example))
            .build(),
    );
    if let Some(description) = retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some(description))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// Declares the reusable error responses: a `components/responses` entry and
/// a type naming it for `#[utoipa::path(responses(...))]`.
macro_rules! error_responses {
    ($($name:ident $status:literal [$($code:ident),+] $(retry_after = $retry:literal)?: $description:literal => $example:expr;)+) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<ApiResponse>) {
                    (stringify!($name), RefOr::Ref(Ref::from_response_name(stringify!($name))))
                }
            }

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
                    BTreeMap::from([($status.to_string(), RefOr::Ref(Ref::from_response_name(stringify!($name))))])
                }
            }
        )+

        /// Status and codes of every reusable error response, by name.
        pub const ERROR_RESPONSES: &[(&str, u16, &[ErrorCode])] = &[
            $((stringify!($name), $status, &[$(ErrorCode::$code),+])),+
        ];

        fn error_responses() -> Vec<(String, RefOr<ApiResponse>)> {
            vec![$((
                stringify!($name).to_owned(),
                error_response($description, &[$(ErrorCode::$code),+], None $(.or(Some($retry)))?, $example),
            )),+]
        }
    };
}

error_responses! {
    InvalidBody 400 [ValidationError, MalformedJson]:
        "The body is not a JSON object (`malformed_json`) or a field is wrong (`validation_error`, with `messages` by field)."
        => ApiError::field("phone_number", "E.164 format required").body();
    InvalidQuery 400 [ValidationError, BadRequest]:
        "A query parameter is wrong; `messages` names each."
        => ApiError::field("limit", "Must be between 1 and 200.").body();
    MalformedWebhook 400 [MalformedJson]:
        "The verified body is not a JSON object."
        => ApiError::MalformedJson("expected a JSON object".into()).body();
    Unauthorized 401 [Unauthorized]:
        "Missing or invalid API key."
        => ApiError::Unauthorized.body();
    InvalidSignature 401 [InvalidSignature]:
        "Missing or wrong signature, or a timestamp outside the tolerance (5 minutes)."
        => ApiError::BadSignature("mismatch").body();
    MessageNotFound 404 [NotFound]:
        "No message with this id among the caller's."
        => ApiError::NotFound.body();
    WebhookNotConfigured 404 [NotFound]:
        "This provider has no secret configured, so its webhook does not exist."
        => ApiError::NotFound.body();
    IdempotencyConflict 409 [IdempotencyConflict]:
        "The `Idempotency-Key` was already used by this API key with a different request."
        => ApiError::IdempotencyConflict.body();
    NotCancellable 409 [NotCancellable]:
        "The message was already handed to Sent (whose API has no cancel call), or is final."
        => ApiError::NotCancellable(MessageStatus::Accepted).body();
    PayloadTooLarge 413 [PayloadTooLarge]:
        "The body is larger than `MAX_BODY_BYTES` (2 MiB by default)."
        => ApiError::PayloadTooLarge.body();
    UnsupportedMediaType 415 [UnsupportedMediaType]:
        "`Content-Type` is not `application/json`."
        => ApiError::UnsupportedMediaType.body();
    RateLimited 429 [RateLimited] retry_after = "Seconds until a retry can succeed.":
        "Too many requests from this client (API key, else IP) for this class of route."
        => ApiError::RateLimited { retry_after: 12 }.body();
    ServiceUnavailable 503 [ServiceUnavailable, Timeout] retry_after = "Seconds to wait (`service_unavailable` only).":
        "Postgres or Redis is down (`service_unavailable`: nothing was stored), or the request timed out (`timeout`)."
        => ApiError::Unavailable("redis").body();
    InternalError 500 [InternalError]:
        "A bug. The body says nothing more; the log has the detail."
        => ApiError::Internal(String::new()).body();
}

/// Declares a named set of reusable error responses.
macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident = [$($response:ident),+];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
                let mut all = BTreeMap::new();
                $(all.append(&mut <$response as IntoResponses>::responses());)+
                all
            }
        }
    )+};
}

error_sets! {
    /// The errors of the sending routes (JSON body, API key, idempotency).
    SubmitErrors = [InvalidBody, Unauthorized, IdempotencyConflict, PayloadTooLarge,
        UnsupportedMediaType, RateLimited, InternalError, ServiceUnavailable];
    /// The errors of a read with an API key.
    ReadErrors = [Unauthorized, RateLimited, InternalError, ServiceUnavailable];
    /// The errors of a signed webhook.
    WebhookErrors = [MalformedWebhook, InvalidSignature, WebhookNotConfigured, PayloadTooLarge,
        RateLimited, InternalError, ServiceUnavailable];
    /// The errors of an open, rate-limited route.
    RateLimitedErrors = [RateLimited, InternalError];
    /// The errors of an open route that is not rate limited.
    UnlimitedErrors = [InternalError];
}

// ---------------------------------------------------------------- headers

/// The `Idempotency-Key` request header of the sending routes.
pub struct IdempotencyKey;

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "Idempotency-Key",
            false,
            "Makes a retry safe: a repeat with the same key and body (per API key, for 24 hours) \
             gets the first answer again, with `Idempotent-Replayed: true`, and sends nothing; the \
             same key with a different body gets `409 idempotency_conflict`. 1 to 255 visible \
             ASCII characters.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]{1,255}$")),
            json!("order-17-confirmation"),
        )]
    }
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
                "The event's id, the deduplication key: the same event twice is stored once.",
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

fn header_param(
    name: &str,
    required: bool,
    description: &str,
    schema: ObjectBuilder,
    example: Value,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .example(Some(example))
        .build()
}

/// Query of `GET /api/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only messages in this status.
    pub status: Option<MessageStatus>,
    /// Only messages created at or after this time (RFC 3339 with offset).
    pub since: Option<DateTime<Utc>>,
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[param(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------- domain

pub use common::domain::{Channel, MessageStatus};

// ---------------------------------------------------------------- bodies

/// The fields of a send request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFields {
    /// E.164: `+`, then 2 to 15 ASCII digits, no leading zero.
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    pub phone_number: String,
    /// Sent's template id. A template (`template_id` and/or `template_name`) or `text`.
    #[schema(min_length = 1, max_length = 100, example = "tmpl_123")]
    pub template_id: Option<String>,
    /// Sent's template name. A template (`template_id` and/or `template_name`) or `text`.
    #[schema(min_length = 1, max_length = 100, example = "welcome")]
    pub template_name: Option<String>,
    /// Free text instead of a template, up to `TEXT_MAX_CHARS` (1,600 by
    /// default) characters, counted as Unicode scalar values.
    #[schema(min_length = 1, example = "Your code is 123456")]
    pub text: Option<String>,
    /// Media for MMS: up to 10 https URLs of up to 2048 characters each, which
    /// the carrier fetches. Required with `text` on the `mms` channel.
    #[schema(max_items = 10, example = json!(["https://cdn.example/receipt.png"]))]
    pub media_urls: Option<Vec<String>>,
    /// Template parameters: up to 100 entries, keys up to 128 and values up to
    /// 1024 characters, strings only. Not with `text`.
    #[schema(schema_with = parameters_schema)]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Channels to try; empty or absent lets Sent choose. No duplicates.
    pub channels: Option<BTreeSet<Channel>>,
    /// When to send: RFC 3339 with an offset, 1 minute to 30 days from now.
    #[schema(example = "2026-12-01T09:00:00Z")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Sent's sandbox: validated and answered, not delivered.
    #[schema(default = false)]
    pub sandbox: Option<bool>,
    /// Where every status change is POSTed, signed (Standard Webhooks) with the
    /// API key's secret. https (http too outside production), up to 2048 characters.
    #[schema(
        format = "uri",
        max_length = 2048,
        example = "https://client.example/hooks/sent-status"
    )]
    pub callback_url: Option<String>,
    /// Echoed back on reads and callbacks: up to 20 entries, keys up to 64 and
    /// values up to 512 characters, strings only.
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<BTreeMap<String, String>>,
}

fn string_map(max_entries: usize, max_key: usize, max_value: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(max_entries))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(max_key)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(max_value)),
        ))
}

fn parameters_schema() -> ObjectBuilder {
    string_map(100, 128, 1024)
        .description(Some("Template parameters, string to string."))
        .examples([json!({"name": "Ada"})])
}

fn metadata_schema() -> ObjectBuilder {
    string_map(crate::validation::METADATA_MAX_KEYS, 64, 512)
        .description(Some("Echoed back on reads and callbacks."))
        .examples([json!({"order": "A-17"})])
}

/// `POST /api/messages/send`: one message. Unknown fields are refused.
pub struct SendBody;

impl PartialSchema for SendBody {
    fn schema() -> RefOr<Schema> {
        let named = |field: &str| {
            ObjectBuilder::new()
                .required(field)
                .property(field, ObjectBuilder::new().schema_type(Type::String))
        };
        AllOfBuilder::new()
            .description(Some(
                "One message: a template (`template_id` and/or `template_name`) or free `text`, not both; unknown fields are refused.",
            ))
            .item(SendFields::schema())
            .item(
                AnyOfBuilder::new()
                    .item(named("template_id"))
                    .item(named("template_name"))
                    .item(named("text")),
            )
            .into()
    }
}

impl ToSchema for SendBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        SendFields::schemas(schemas);
    }
}

/// `POST /api/messages/welcome`: the welcome template on WhatsApp.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomeBody {
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    pub phone_number: String,
    /// The `name` parameter; `Valued Customer` when absent.
    #[schema(max_length = 100, example = "Ada")]
    pub name: Option<String>,
}

/// `POST /api/messages/order-confirmation`: the order confirmation template
/// on SMS and WhatsApp.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmationBody {
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    pub phone_number: String,
    #[schema(max_length = 100, example = "A-17")]
    pub order_number: String,
    #[schema(max_length = 100, example = "$42.00")]
    pub total: String,
}

/// `POST /api/messages/batch`: up to 1000 messages in one transaction. Each
/// item is validated on its own: a bad one gets an error result and does
/// not sink the others.
#[derive(ToSchema)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<SendBody>,
}

/// The answer of the sending routes: the message is stored and queued.
#[derive(ToSchema)]
pub struct Accepted {
    #[schema(
        pattern = "^[0-9A-HJKMNP-TV-Z]{26}$",
        example = "01JDX4W1Q2RZ8N3B5C7D9F0GHK"
    )]
    pub message_id: String,
    #[schema(value_type = String, pattern = "^queued$", example = "queued")]
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// The answer of a batch: one result per item, in order.
#[derive(ToSchema)]
pub struct BatchAccepted {
    pub results: Vec<BatchResult>,
    pub created_at: DateTime<Utc>,
}

/// One batch item: queued, or its validation error.
pub struct BatchResult;

impl PartialSchema for BatchResult {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(BatchQueued::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for BatchResult {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((BatchQueued::name().into(), BatchQueued::schema()));
        BatchQueued::schemas(schemas);
        schemas.push((ErrorBody::name().into(), ErrorBody::schema()));
        ErrorBody::schemas(schemas);
    }
}

/// A batch item that was stored and queued.
#[derive(ToSchema)]
pub struct BatchQueued {
    #[schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub message_id: String,
    #[schema(pattern = "^queued$", example = "queued")]
    pub status: String,
}

/// A message, as `GET /api/messages` lists it.
#[derive(Serialize, ToSchema)]
pub struct Message {
    #[schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub message_id: String,
    pub status: MessageStatus,
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$")]
    pub phone_number: String,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    /// Free text, when the message has no template.
    pub text: Option<String>,
    /// https media for MMS.
    pub media_urls: Vec<String>,
    pub channels: Vec<Channel>,
    /// Calls to Sent so far.
    pub attempts: i32,
    /// Sent's id for the message (its first recipient and channel).
    pub provider_message_id: Option<String>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// The last failure's code (Sent's, or ours: `timeout`, `network`, ...).
    pub last_error_code: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Retries ran out; `worker redrive` sends it again.
    pub dead_lettered: bool,
    /// As sent.
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message with its timeline, as `GET /api/messages/{id}` answers.
#[derive(Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    /// Every event, oldest first.
    pub events: Vec<Event>,
}

/// One event of a message's timeline.
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// The status it reports, or what happened (`retrying`, `dead_lettered`, ...).
    #[schema(example = "delivered")]
    pub status: String,
    pub at: DateTime<Utc>,
    /// Who reported it: `gateway`, `worker`, `sent` (a webhook), `operator`.
    #[schema(example = "sent")]
    pub source: String,
    /// Whether it moved the status (false when it arrived out of order).
    pub applied: bool,
    pub attempt: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

/// A page of the caller's messages, newest first.
#[derive(ToSchema)]
pub struct MessageList {
    pub messages: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub next_cursor: Option<String>,
}

/// A webhook was verified and stored (or was already stored).
#[derive(ToSchema)]
#[schema(example = json!({"received": true}))]
pub struct Received {
    pub received: bool,
}

/// `ok` or `unavailable`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Ok,
    Unavailable,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Healthiness {
    Healthy,
    Unhealthy,
}

/// Readiness: Postgres and Redis each answered within 2 seconds.
#[derive(ToSchema)]
pub struct Health {
    pub status: Healthiness,
    #[schema(example = "sent-gateway")]
    pub service: String,
    pub timestamp: DateTime<Utc>,
    pub services: HealthServices,
}

#[derive(ToSchema)]
pub struct HealthServices {
    pub postgres: Dependency,
    pub redis: Dependency,
    /// Present only while the gateway shuts down (it still answers, but load
    /// balancers should stop routing to it).
    #[schema(pattern = "^draining$")]
    pub gateway: Option<String>,
}

/// Liveness only.
#[derive(ToSchema)]
#[schema(example = json!({"status": "alive"}))]
pub struct Live {
    #[schema(pattern = "^alive$")]
    pub status: String,
}

/// The service and a map of its main endpoints.
#[derive(ToSchema)]
pub struct Index {
    #[schema(example = "sent-gateway")]
    pub service: String,
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Name to path.
    pub endpoints: BTreeMap<String, String>,
}

/// Webhook bodies are the provider's JSON objects, stored as received.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct WebhookEvent(pub BTreeMap<String, Value>);

/// Sent's webhook body examples, also posted by the tests.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::status_body;
    use axum::http::StatusCode;
    use common::domain;

    fn names<T: Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
        values
            .into_iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Adding a variant to `ApiError` breaks this match, and so brings the
    /// author here to name its code in `ErrorCode`.
    fn every_api_error() -> Vec<ApiError> {
        let all = vec![
            ApiError::Validation(Default::default()),
            ApiError::MalformedJson(String::new()),
            ApiError::Unauthorized,
            ApiError::BadSignature("mismatch"),
            ApiError::NotFound,
            ApiError::IdempotencyConflict,
            ApiError::NotCancellable(MessageStatus::Sent),
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::RateLimited { retry_after: 1 },
            ApiError::Unavailable("redis"),
            ApiError::Internal(String::new()),
        ];
        for error in &all {
            match error {
                ApiError::Validation(_)
                | ApiError::MalformedJson(_)
                | ApiError::Unauthorized
                | ApiError::BadSignature(_)
                | ApiError::NotFound
                | ApiError::IdempotencyConflict
                | ApiError::NotCancellable(_)
                | ApiError::PayloadTooLarge
                | ApiError::UnsupportedMediaType
                | ApiError::RateLimited { .. }
                | ApiError::Unavailable(_)
                | ApiError::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn error_codes_are_every_code_the_gateway_answers() {
        let documented: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut answered: BTreeSet<String> = every_api_error()
            .iter()
            .map(|e| e.code().to_owned())
            .collect();
        for status in 400..600 {
            let status = StatusCode::from_u16(status).unwrap();
            answered.insert(status_body(status)["code"].as_str().unwrap().to_owned());
        }
        assert_eq!(documented, answered);
    }

    #[test]
    fn each_error_response_names_the_status_of_its_codes() {
        for error in every_api_error() {
            let status = error.status().as_u16();
            let code = error.code();
            assert!(
                ERROR_RESPONSES
                    .iter()
                    .any(|(_, s, codes)| *s == status && codes.iter().any(|c| c.as_str() == code)),
                "no error response documents {status} {code}"
            );
        }
    }

    #[test]
    fn statuses_and_channels_are_documented_as_the_domain_spells_them() {
        let doc = serde_json::to_value(document()).unwrap();
        let documented = |name: &str| -> BTreeSet<String> {
            let values = doc["components"]["schemas"][name]["enum"].as_array();
            let values = values.unwrap_or_else(|| panic!("{name} is not an enum"));
            values
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            documented("MessageStatus"),
            names(domain::MessageStatus::ALL)
        );
        assert_eq!(documented("Channel"), names(domain::Channel::ALL));
        for status in domain::MessageStatus::ALL {
            assert!(names([status]).contains(status.as_str()));
        }
        for channel in domain::Channel::ALL {
            assert!(names([channel]).contains(channel.as_str()));
        }
    }

    #[test]
    fn patterns_match_the_validation() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let phone = &schemas["SendBody"]["allOf"][0]["properties"]["phone_number"];
        let id = &schemas["Accepted"]["properties"]["message_id"];
        let valid = |schema: &Value, value: &str| jsonschema::is_valid(schema, &json!(value));
        for (number, ok) in [
            ("+14155550123", true),
            ("+12", true),
            ("+1", false),
            ("+0123", false),
            ("14155550123", false),
            ("+1234567890123456", false),
            ("+1415555012\u{0663}", false),
        ] {
            assert_eq!(valid(phone, number), ok, "{number}");
            assert_eq!(domain::PhoneNumber::parse(number).is_ok(), ok, "{number}");
        }
        assert!(valid(id, &domain::MessageId::new().to_string()));
        assert!(!valid(id, "not-an-id"));
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    #[ignore = "prints the document"]
    fn print_document() {
        println!("{}", document().to_pretty_json().unwrap());
    }
}
