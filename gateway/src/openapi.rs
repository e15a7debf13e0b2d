//! Assembly of the OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! Paths come from the handlers' `#[utoipa::path]` annotations, gathered by
//! [`crate::app::routes`], the same function that registers the routes with
//! the router: a route is documented because it is registered, and the other
//! way round. Bodies are documented by the types the handlers serialize,
//! beside them. This module holds what the document shares: its
//! description, the security schemes, the reusable error responses.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Required, SecurityRequirement,
};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToResponse};

use crate::auth::Access;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use common::domain::{Channel, MessageStatus};
use common::sent::webhook::InboundCallback;

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

**Rate limits** per client (API key, else IP; an IPv6 client by its /64): \
`POST /api/messages/...` 10 messages per minute (a batch counts each of its \
messages: the items past what is left get `rate_limited` results), \
`/webhooks/*` 100, everything else 100 (configurable; off in the testing \
profile). A limited request gets `429` with `Retry-After`; so does a client \
whose API keys failed too often.

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
    components(schemas(ErrorBody, ErrorCode, MessageStatus, Channel, InboundCallback)),
    modifiers(&Components),
    tags(
        (name = "messages", description = "Sending messages and reading their status. API key required."),
        (name = "webhooks", description = "Signed provider webhooks, stored in the inbox and processed by the worker."),
        (name = "operations", description = "Health, metrics, the service index and this document."),
        (name = "dashboard", description = "The built-in status page and its data."),
        (name = "events", description = "The pull API: verified provider events as stored, in order, with a cursor (admin keys), and `source=inbound`, the replies to messages routed to the caller's tenant (an admin: all, unroutable ones included), each an `InboundCallback`: the body of the signed `message.inbound` callback the worker POSTs to the tenant's inbound URL."),
    )
)]
pub struct ApiDoc;

/// Completes the document of every registered route (from `app::routes`):
/// every response, errors included, carries the request id.
pub fn finish(mut doc: Document) -> Document {
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

/// A reusable error response: [`ErrorBody`] with `code` narrowed to `codes`.
fn error_response(
    description: &str,
    codes: &[ErrorCode],
    retry_after: Option<&str>,
    example: ErrorBody,
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
            .example(serde_json::to_value(example).ok())
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

pub fn header_param(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::Serialize;
    use serde_json::json;

    use super::*;
    use crate::app::document;
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
    fn each_error_response_names_the_status_of_its_codes() {
        for error in every_api_error() {
            let status = error.status().as_u16();
            let code = error.code();
            assert!(
                ERROR_RESPONSES
                    .iter()
                    .any(|(_, s, codes)| *s == status && codes.contains(&code)),
                "no error response documents {status} {code:?}"
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
