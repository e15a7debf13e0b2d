//! The client of Sent's `POST /v3/messages`: one pooled HTTP client, the
//! account key in `x-api-key`, our message id as `Idempotency-Key`, and every
//! answer classified ([`super::classify`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::classify::{
    CODE_NETWORK, SendOutcome, classify_response, classify_transport, parse_retry_after,
};
use super::wire::{Envelope, MessageInfo, SendRequest, TemplateBody};
use crate::config::{Secret, SentConfig};
use crate::domain::MessageId;
use crate::store::MessageRecord;

/// Longest wait for a TCP (and TLS) connection to Sent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sent refuses `scheduled_at` less than a minute ahead; a message whose time
/// is closer than this (a retry that came late) is sent right away instead.
const MIN_SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(90);

/// Calls Sent. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct SentClient {
    http: reqwest::Client,
    messages_url: String,
    api_key: HeaderValue,
}

impl std::fmt::Debug for SentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentClient")
            .field("messages_url", &self.messages_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("SENT_DM_API_KEY is not a valid header value")]
    InvalidApiKey,
    #[error("cannot build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

impl SentClient {
    /// `max_idle` bounds the pooled connections kept open (use the worker's concurrency).
    pub fn new(
        config: &SentConfig,
        api_key: &Secret,
        max_idle: usize,
    ) -> Result<SentClient, ClientError> {
        let mut api_key =
            HeaderValue::from_str(api_key.expose()).map_err(|_| ClientError::InvalidApiKey)?;
        api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(CONNECT_TIMEOUT))
            .pool_max_idle_per_host(max_idle.max(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // A redirect of a POST would be a misconfigured base URL: surface it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sent-gateway-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(SentClient {
            http,
            messages_url: format!("{}/v3/messages", config.base_url),
            api_key,
        })
    }

    /// Sends one request with our message id as its `Idempotency-Key` and
    /// classifies the answer.
    #[tracing::instrument(name = "sent.send", skip_all, fields(idempotency_key = %idempotency_key, http.status = tracing::field::Empty))]
    pub async fn send(&self, request: &SendRequest, idempotency_key: MessageId) -> SendOutcome {
        let body = match serde_json::to_vec(request) {
            Ok(body) => body,
            Err(e) => {
                return SendOutcome::Permanent {
                    code: "encode_error".into(),
                    message: e.to_string(),
                };
            }
        };
        let mut call = self
            .http
            .post(&self.messages_url)
            .header("x-api-key", self.api_key.clone())
            .header("Idempotency-Key", idempotency_key.to_string())
            .header(CONTENT_TYPE, "application/json");
        // W3C trace context, so the trace continues into Sent when it takes part.
        for (name, value) in crate::telemetry::current_context() {
            call = call.header(name, value);
        }
        let started = std::time::Instant::now();
        let outcome = self.call(call.body(body)).await;
        let (kind, code) = match &outcome {
            SendOutcome::Accepted { .. } => ("accepted", ""),
            SendOutcome::Retry { code, .. } => ("retry", code.as_str()),
            SendOutcome::Permanent { code, .. } => ("permanent", code.as_str()),
        };
        metrics::histogram!(crate::metrics::SENT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::SENT_REQUESTS, "outcome" => kind, "code" => code.to_owned()).increment(1);
        outcome
    }

    /// `GET /v3/messages/{id}`: Sent's current word on one of its messages,
    /// for the status poll that covers lost webhooks.
    #[tracing::instrument(name = "sent.status", skip_all, fields(http.status = tracing::field::Empty))]
    pub async fn status(&self, provider_id: &str) -> StatusAnswer {
        let mut url = match reqwest::Url::parse(&self.messages_url) {
            Ok(url) => url,
            Err(e) => return StatusAnswer::failed("bad_url", e.to_string()),
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(provider_id);
        }
        let call = self.http.get(url).header("x-api-key", self.api_key.clone());
        let response = match call.send().await {
            Ok(response) => response,
            Err(error) => {
                return match classify_transport(&error) {
                    SendOutcome::Retry { code, message, .. } => {
                        StatusAnswer::failed(&code, message)
                    }
                    _ => StatusAnswer::failed(CODE_NETWORK, error.to_string()),
                };
            }
        };
        let status = response.status().as_u16();
        tracing::Span::current().record("http.status", status);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return StatusAnswer::failed(CODE_NETWORK, error.to_string()),
        };
        let envelope: Option<Envelope<MessageInfo>> = serde_json::from_slice(&body).ok();
        match (status, envelope) {
            (
                200..=299,
                Some(Envelope {
                    data: Some(info), ..
                }),
            ) if info.status.is_some() => StatusAnswer::Found(info),
            (200..=299, _) => StatusAnswer::failed(
                "unreadable_status",
                format!("HTTP {status} without a readable data.status"),
            ),
            (404, _) => StatusAnswer::NotFound,
            (_, envelope) => {
                let error = envelope.and_then(|e| e.error);
                let code = error
                    .as_ref()
                    .and_then(|e| e.code.clone())
                    .unwrap_or_else(|| format!("HTTP_{status}"));
                let message = error
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| format!("Sent answered HTTP {status}"));
                StatusAnswer::Failed { code, message }
            }
        }
    }

    async fn call(&self, call: reqwest::RequestBuilder) -> SendOutcome {
        let response = call.send().await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return classify_transport(&error),
        };
        let status = response.status().as_u16();
        tracing::Span::current().record("http.status", status);
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            // The answer was cut off: as good as no answer.
            Err(error) => return classify_transport(&error),
        };
        let outcome = classify_response(status, retry_after(&headers), replayed(&headers), &body);
        let outcome = match outcome {
            SendOutcome::Accepted {
                provider_ids,
                request_id: None,
                replayed,
                unreadable,
            } => SendOutcome::Accepted {
                provider_ids,
                request_id: header(&headers, "x-request-id"),
                replayed,
                unreadable,
            },
            other => other,
        };
        if status == 401 {
            alert_bad_key(&outcome);
        }
        outcome
    }
}

/// What `GET /v3/messages/{id}` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusAnswer {
    /// Sent's current status of the message (`status` is always set).
    Found(MessageInfo),
    /// Sent does not know the id.
    NotFound,
    /// No usable answer: a transport error, an error status, an unreadable body.
    Failed { code: String, message: String },
}

impl StatusAnswer {
    fn failed(code: &str, message: String) -> StatusAnswer {
        StatusAnswer::Failed {
            code: code.to_owned(),
            message,
        }
    }
}

/// The request for a stored message: its `text`, or its template (the id
/// when there is one, else the name: Sent takes one of the two); media and
/// channels only when the message has some.
pub fn send_request(message: &MessageRecord, now: DateTime<Utc>) -> SendRequest {
    let template = match (&message.template_id, &message.template_name) {
        (None, None) => None,
        (id, name) => {
            let parameters: BTreeMap<String, String> = match &message.parameters {
                serde_json::Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            Some(TemplateBody {
                name: id.is_none().then(|| name.clone()).flatten(),
                id: id.clone(),
                parameters: (!parameters.is_empty()).then_some(parameters),
            })
        }
    };
    SendRequest {
        to: vec![message.phone_number.to_string()],
        template,
        text: message.text.clone(),
        media_urls: (!message.media_urls.is_empty()).then(|| message.media_urls.clone()),
        channel: (!message.channels.is_empty()).then(|| {
            message
                .channels
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect()
        }),
        scheduled_at: message
            .scheduled_at
            .filter(|at| *at > now + MIN_SCHEDULE_AHEAD)
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        sandbox: message.sandbox.then_some(true),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

fn replayed(headers: &HeaderMap) -> bool {
    header(headers, "idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A rejected key fails every message until an operator fixes it: say so
/// loudly, at most once every 30 seconds, and never print the key.
fn alert_bad_key(outcome: &SendOutcome) {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 30
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let code = match outcome {
            SendOutcome::Permanent { code, .. } | SendOutcome::Retry { code, .. } => code.as_str(),
            SendOutcome::Accepted { .. } => "",
        };
        tracing::error!(
            code,
            "Sent rejected the API key (401): messages fail until an operator fixes SENT_DM_API_KEY"
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{Channel, MessageStatus, PhoneNumber};

    fn message() -> MessageRecord {
        let now = Utc::now();
        MessageRecord {
            id: "01JDX3S9Q8M6B2W4V7N5K0R1TZ".parse().unwrap(),
            client: "test".into(),
            phone_number: PhoneNumber::parse("+14155550123").unwrap(),
            template_id: Some("tmpl_1".into()),
            template_name: Some("welcome".into()),
            parameters: json!({"name": "Ada", "n": 3}),
            text: None,
            media_urls: vec![],
            channels: vec![],
            scheduled_at: None,
            sandbox: false,
            callback_url: None,
            metadata: json!({}),
            status: MessageStatus::Sending,
            attempts: 1,
            provider_message_id: None,
            last_error_code: None,
            last_error: None,
            dead_lettered_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn id_is_preferred_and_absent_fields_are_omitted() {
        let request = send_request(&message(), Utc::now());
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"to": ["+14155550123"], "template": {"id": "tmpl_1", "parameters": {"n": "3", "name": "Ada"}}})
        );
    }

    #[test]
    fn name_channels_schedule_and_sandbox() {
        let now = Utc::now();
        let at = now + chrono::TimeDelta::hours(2);
        let mut m = message();
        m.template_id = None;
        m.parameters = json!({});
        m.channels = vec![Channel::Sms, Channel::Whatsapp];
        m.scheduled_at = Some(at);
        m.sandbox = true;
        let json = serde_json::to_value(send_request(&m, now)).unwrap();
        assert_eq!(json["template"], json!({"name": "welcome"}));
        assert_eq!(json["channel"], json!(["sms", "whatsapp"]));
        assert_eq!(json["sandbox"], json!(true));
        let sent_at = DateTime::parse_from_rfc3339(json["scheduled_at"].as_str().unwrap()).unwrap();
        assert_eq!(sent_at.timestamp(), at.timestamp());
        assert!(json["scheduled_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn free_text_with_media() {
        let mut m = message();
        m.template_id = None;
        m.template_name = None;
        m.parameters = json!({});
        m.text = Some("Your receipt".into());
        m.media_urls = vec!["https://cdn.example/r.png".into()];
        m.channels = vec![Channel::Mms];
        assert_eq!(
            serde_json::to_value(send_request(&m, Utc::now())).unwrap(),
            json!({"to": ["+14155550123"], "text": "Your receipt", "channel": ["mms"],
                   "media_urls": ["https://cdn.example/r.png"]})
        );
    }

    #[test]
    fn a_schedule_that_has_come_is_sent_now() {
        let now = Utc::now();
        let mut m = message();
        m.scheduled_at = Some(now + chrono::TimeDelta::seconds(30));
        assert_eq!(send_request(&m, now).scheduled_at, None);
        m.scheduled_at = Some(now - chrono::TimeDelta::hours(1));
        assert_eq!(send_request(&m, now).scheduled_at, None);
    }

    #[test]
    fn the_key_never_prints() {
        let config = SentConfig {
            api_key: None,
            base_url: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
            messages_per_minute: 0,
        };
        let client = SentClient::new(&config, &Secret::new("super-secret-key"), 4).unwrap();
        assert!(!format!("{client:?}").contains("super-secret-key"));
    }
}
