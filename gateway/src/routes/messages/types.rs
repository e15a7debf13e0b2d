//! The bodies of the message routes: what the handlers answer (serialized
//! from these types) and what they read (validated field by field in
//! `crate::validation`, whose limits the schemas below use).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use common::domain::{
    Channel, EventSource, MessageId, MessageStatus, PhoneNumber, TEMPLATE_FIELD_MAX,
    serialize_api_time, serialize_api_time_opt,
};
use common::store::{EventRecord, MessageRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::error::ErrorBody;
use crate::openapi::header_param;
use crate::validation::{
    BATCH_MAX, IDEMPOTENCY_KEY_MAX, MEDIA_URLS_MAX, METADATA_MAX_KEY_CHARS, METADATA_MAX_KEYS,
    METADATA_MAX_VALUE_CHARS, PARAMETER_MAX_CHARS, PARAMETER_MAX_KEY_CHARS, PARAMETERS_MAX_KEYS,
    SHORTCUT_FIELD_MAX, URL_MAX_CHARS,
};

// ---------------------------------------------------------------- requests

/// The `Idempotency-Key` request header of the sending routes.
pub struct IdempotencyKey;

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "Idempotency-Key",
            false,
            &format!(
                "Makes a retry safe: a repeat with the same key and body (per API key, for 24 hours) \
                 gets the first answer again, with `Idempotent-Replayed: true`, and sends nothing; the \
                 same key with a different body gets `409 idempotency_conflict`. 1 to \
                 {IDEMPOTENCY_KEY_MAX} visible ASCII characters."
            ),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(IDEMPOTENCY_KEY_MAX))
                .pattern(Some(format!("^[!-~]{{1,{IDEMPOTENCY_KEY_MAX}}}$"))),
            json!("order-17-confirmation"),
        )]
    }
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

/// The fields of a send request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by the validator as JSON; the type is the schema
pub struct SendFields {
    /// E.164: `+`, then 2 to 15 ASCII digits, no leading zero.
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    phone_number: String,
    #[schema(schema_with = template_id_schema)]
    template_id: Option<String>,
    #[schema(schema_with = template_name_schema)]
    template_name: Option<String>,
    /// Free text instead of a template, up to `TEXT_MAX_CHARS` (1,600 by
    /// default) characters, counted as Unicode scalar values.
    #[schema(min_length = 1, example = "Your code is 123456")]
    text: Option<String>,
    #[schema(schema_with = media_urls_schema)]
    media_urls: Option<Vec<String>>,
    #[schema(schema_with = parameters_schema)]
    parameters: Option<BTreeMap<String, String>>,
    /// Channels to try; empty or absent lets Sent choose. No duplicates.
    channels: Option<BTreeSet<Channel>>,
    /// When to send: RFC 3339 with an offset, 1 minute to 30 days from now.
    #[schema(example = "2026-12-01T09:00:00Z")]
    scheduled_at: Option<DateTime<Utc>>,
    /// Sent's sandbox: validated and answered, not delivered.
    #[schema(default = false)]
    sandbox: Option<bool>,
    #[schema(schema_with = callback_url_schema)]
    callback_url: Option<String>,
    #[schema(schema_with = metadata_schema)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A string of at most `max` characters, or null.
fn nullable_text(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(max))
}

fn template_id_schema() -> ObjectBuilder {
    nullable_text(TEMPLATE_FIELD_MAX)
        .min_length(Some(1))
        .description(Some(
            "Sent's template id. A template (`template_id` and/or `template_name`) or `text`.",
        ))
        .examples([json!("tmpl_123")])
}

fn template_name_schema() -> ObjectBuilder {
    nullable_text(TEMPLATE_FIELD_MAX)
        .min_length(Some(1))
        .description(Some(
            "Sent's template name. A template (`template_id` and/or `template_name`) or `text`.",
        ))
        .examples([json!("welcome")])
}

fn callback_url_schema() -> ObjectBuilder {
    nullable_text(URL_MAX_CHARS)
        .format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into())))
        .description(Some(format!(
            "Where every status change is POSTed, signed (Standard Webhooks) with the API \
             key's secret. https (http too outside production), up to {URL_MAX_CHARS} characters. \
             Its host must not be a private, loopback, link-local or otherwise non-public \
             address, nor `localhost` (unless the operator allows that network); a name is \
             checked on every delivery against the addresses it resolves to."
        )))
        .examples([json!("https://client.example/hooks/sent-status")])
}

fn media_urls_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(URL_MAX_CHARS)),
        )
        .max_items(Some(MEDIA_URLS_MAX))
        .description(Some(format!(
            "Media for MMS: up to {MEDIA_URLS_MAX} https URLs of up to {URL_MAX_CHARS} \
             characters each, which the carrier fetches. Required with `text` on the `mms` channel."
        )))
        .examples([json!(["https://cdn.example/receipt.png"])])
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
    string_map(
        PARAMETERS_MAX_KEYS,
        PARAMETER_MAX_KEY_CHARS,
        PARAMETER_MAX_CHARS,
    )
    .description(Some(format!(
        "Template parameters: up to {PARAMETERS_MAX_KEYS} entries, keys up to \
         {PARAMETER_MAX_KEY_CHARS} and values up to {PARAMETER_MAX_CHARS} characters, strings \
         only. Not with `text`."
    )))
    .examples([json!({"name": "Ada"})])
}

fn metadata_schema() -> ObjectBuilder {
    string_map(
        METADATA_MAX_KEYS,
        METADATA_MAX_KEY_CHARS,
        METADATA_MAX_VALUE_CHARS,
    )
    .description(Some(format!(
        "Echoed back on reads and callbacks: up to {METADATA_MAX_KEYS} entries, keys up to \
         {METADATA_MAX_KEY_CHARS} and values up to {METADATA_MAX_VALUE_CHARS} characters, \
         strings only."
    )))
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
#[allow(dead_code)] // read by the validator as JSON; the type is the schema
pub struct WelcomeBody {
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    phone_number: String,
    #[schema(schema_with = welcome_name_schema)]
    name: Option<String>,
}

/// `POST /api/messages/order-confirmation`: the order confirmation template
/// on SMS and WhatsApp.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by the validator as JSON; the type is the schema
pub struct OrderConfirmationBody {
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$", example = "+14155550123")]
    phone_number: String,
    #[schema(schema_with = order_number_schema)]
    order_number: String,
    #[schema(schema_with = total_schema)]
    total: String,
}

fn welcome_name_schema() -> ObjectBuilder {
    nullable_text(SHORTCUT_FIELD_MAX)
        .description(Some("The `name` parameter; `Valued Customer` when absent."))
        .examples([json!("Ada")])
}

fn shortcut_field(example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(SHORTCUT_FIELD_MAX))
        .examples([json!(example)])
}

fn order_number_schema() -> ObjectBuilder {
    shortcut_field("A-17")
}

fn total_schema() -> ObjectBuilder {
    shortcut_field("$42.00")
}

/// `POST /api/messages/batch`: up to 1000 messages in one transaction. Each
/// item is validated on its own: a bad one gets an error result and does
/// not sink the others.
#[derive(ToSchema)]
#[allow(dead_code)] // read by the validator as JSON; the type is the schema
pub struct BatchBody {
    #[schema(schema_with = batch_items)]
    messages: Vec<SendBody>,
}

fn batch_items() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(SendBody::name()))
        .min_items(Some(1))
        .max_items(Some(BATCH_MAX))
}

// ---------------------------------------------------------------- answers

/// The status of a message just accepted: always `queued` (a scheduled one
/// too, as the contract says; `GET` shows `scheduled`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Queued {
    Queued,
}

/// The answer of the sending routes: the message is stored and queued.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    #[schema(
        value_type = String,
        pattern = "^[0-9A-HJKMNP-TV-Z]{26}$",
        example = "01JDX4W1Q2RZ8N3B5C7D9F0GHK"
    )]
    pub message_id: MessageId,
    pub status: Queued,
    #[serde(serialize_with = "serialize_api_time")]
    pub created_at: DateTime<Utc>,
}

/// The answer of a batch: one result per item, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    pub results: Vec<BatchResult>,
    #[serde(serialize_with = "serialize_api_time")]
    pub created_at: DateTime<Utc>,
}

/// One batch item: queued, or its validation error.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Queued(BatchQueued),
    Invalid(ErrorBody),
}

/// A batch item that was stored and queued.
#[derive(Serialize, ToSchema)]
pub struct BatchQueued {
    #[schema(value_type = String, pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub message_id: MessageId,
    pub status: Queued,
}

/// A message, as `GET /api/messages` lists it.
#[derive(Serialize, ToSchema)]
pub struct Message {
    #[schema(value_type = String, pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub message_id: MessageId,
    pub status: MessageStatus,
    #[schema(value_type = String, pattern = r"^\+[1-9][0-9]{1,14}$")]
    pub phone_number: PhoneNumber,
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
    #[serde(serialize_with = "serialize_api_time_opt")]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Retries ran out; `worker redrive` sends it again.
    pub dead_lettered: bool,
    /// As sent.
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: Value,
    #[serde(serialize_with = "serialize_api_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_api_time")]
    pub updated_at: DateTime<Utc>,
}

impl From<MessageRecord> for Message {
    fn from(m: MessageRecord) -> Message {
        Message {
            message_id: m.id,
            status: m.status,
            phone_number: m.phone_number,
            template_id: m.template_id,
            template_name: m.template_name,
            text: m.text,
            media_urls: m.media_urls,
            channels: m.channels,
            attempts: m.attempts,
            provider_message_id: m.provider_message_id,
            last_error: m.last_error,
            last_error_code: m.last_error_code,
            scheduled_at: m.scheduled_at,
            dead_lettered: m.dead_lettered_at.is_some(),
            metadata: m.metadata,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
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
    #[serde(serialize_with = "serialize_api_time")]
    pub at: DateTime<Utc>,
    /// Who reported it.
    pub source: EventSource,
    /// Whether it moved the status (false when it arrived out of order).
    pub applied: bool,
    pub attempt: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

impl From<EventRecord> for Event {
    fn from(e: EventRecord) -> Event {
        Event {
            status: e.status,
            at: e.at,
            source: e.source,
            applied: e.applied,
            attempt: e.attempt,
            detail: e.detail,
        }
    }
}

/// A page of the caller's messages, newest first.
#[derive(Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(value_type = Option<String>, pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
    pub next_cursor: Option<MessageId>,
}
