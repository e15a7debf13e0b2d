//! Settings of the simulator, from code (tests) or from `SENT_SIM_*` variables.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::signature::SigningKey;
use anyhow::{Context, bail};

use crate::faults::Faults;

/// Development-only webhook secret used when `SENT_SIM_WEBHOOK_SECRET` is unset:
/// the base64 of the 32 ASCII bytes `sent-sim-development-only-secret`.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_c2VudC1zaW0tZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=";
/// API key accepted when `SENT_SIM_API_KEYS` is unset.
pub const DEFAULT_API_KEY: &str = "sim_test_key";
/// Channel used when a send names none (or names `sent`).
pub const DEFAULT_AUTO_CHANNEL: &str = "sms";

/// Names of the webhook envelope's members (SENT_API.md lists both forms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WebhookEnvelope {
    /// `{"field", "event", "timestamp", "request_id", "payload"}` (Sent's current types).
    #[default]
    Event,
    /// `{"field", "sub_type", "timestamp", "request_id", "value"}` (older official samples).
    SubType,
}

/// Env var naming a directory: `SimConfig::default()` then records every
/// `/v3` exchange to a fresh `<dir>/<pid>-<n>.jsonl`.
pub const RECORD_DIR_VAR: &str = "SENT_SIM_RECORD_DIR";

/// A fresh recording file under `$SENT_SIM_RECORD_DIR`, if that is set.
fn record_file_in(dir: Option<String>) -> Option<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = dir.filter(|dir| !dir.trim().is_empty())?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Some(PathBuf::from(dir.trim()).join(format!("{}-{n}.jsonl", std::process::id())))
}

/// Everything the simulator can be told. `Default` suits in-process tests
/// (fast lifecycle and retries, no faults); [`SimConfig::from_env`] starts
/// from Sent-like timings instead (100 ms steps, first retry after 60 s).
#[derive(Clone)]
pub struct SimConfig {
    /// Accepted `x-api-key` values; each key is its own account.
    pub api_keys: Vec<String>,
    /// Where status webhooks go; `None` sends none (changeable at runtime).
    pub webhook_url: Option<String>,
    /// Key signing the webhooks.
    pub webhook_secret: SigningKey,
    /// The endpoint id sent as `x-webhook-id`; generated once at start when `None`.
    pub webhook_id: Option<String>,
    /// Per-attempt timeout of a webhook delivery.
    pub webhook_timeout: Duration,
    /// Delay before the first retry of a failed delivery; doubles, capped at 60 min.
    pub webhook_retry_base: Duration,
    /// Retries after the first failed attempt.
    pub webhook_retries: u32,
    /// Webhook requests in flight at most.
    pub webhook_concurrency: usize,
    /// Delay between two lifecycle steps of a message.
    pub step_delay: Duration,
    /// Share of WhatsApp / RCS messages that reach READ.
    pub read_rate: f64,
    /// Share of messages that end FAILED.
    pub fail_rate: f64,
    /// How long a completed idempotent answer is replayed.
    pub idempotency_ttl: Duration,
    /// How long a message is kept for `GET` after its lifecycle ended.
    pub message_retention: Duration,
    /// Messages per minute and API key; 0 means unlimited.
    pub messages_per_minute: u32,
    /// `Retry-After` seconds on a 429 `BUSINESS_002`.
    pub retry_after_secs: u64,
    /// Channel picked when the send leaves the choice to Sent.
    pub auto_channel: String,
    /// Fault injection in effect at start.
    pub faults: Faults,
    /// Webhook envelope member names.
    pub webhook_envelope: WebhookEnvelope,
    /// Send `X-Webhook-Event-ID` on deliveries (some official samples have none).
    pub webhook_event_id_header: bool,
    /// Answer `null` in every optional member Sent may null (`success`,
    /// `meta`, `data.status`, template id and name, recipients' `to`,
    /// `channel`, `body`; errors' `details` and `doc_url`), keeping
    /// `message_id` and `error.code` / `error.message`.
    pub null_optionals: bool,
    /// Append every `/v3` exchange to this file as one JSON line. `default()`
    /// sets a fresh file under `$SENT_SIM_RECORD_DIR` when that is set.
    pub record: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_keys: vec![DEFAULT_API_KEY.to_owned()],
            webhook_url: None,
            webhook_secret: SigningKey::parse(DEV_WEBHOOK_SECRET)
                .expect("the development secret is valid base64"),
            webhook_id: None,
            webhook_timeout: Duration::from_secs(5),
            webhook_retry_base: Duration::from_millis(100),
            webhook_retries: 3,
            webhook_concurrency: 64,
            step_delay: Duration::from_millis(20),
            read_rate: 0.5,
            fail_rate: 0.0,
            idempotency_ttl: Duration::from_secs(86_400),
            message_retention: Duration::from_secs(600),
            messages_per_minute: 0,
            retry_after_secs: 1,
            auto_channel: DEFAULT_AUTO_CHANNEL.to_owned(),
            faults: Faults::default(),
            webhook_envelope: WebhookEnvelope::Event,
            webhook_event_id_header: true,
            null_optionals: false,
            record: record_file_in(std::env::var(RECORD_DIR_VAR).ok()),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_keys", &format_args!("<{} keys>", self.api_keys.len()))
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &self.webhook_secret)
            .field("webhook_id", &self.webhook_id)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("webhook_retry_base", &self.webhook_retry_base)
            .field("webhook_retries", &self.webhook_retries)
            .field("webhook_concurrency", &self.webhook_concurrency)
            .field("step_delay", &self.step_delay)
            .field("read_rate", &self.read_rate)
            .field("fail_rate", &self.fail_rate)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("message_retention", &self.message_retention)
            .field("messages_per_minute", &self.messages_per_minute)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("auto_channel", &self.auto_channel)
            .field("faults", &self.faults)
            .field("webhook_envelope", &self.webhook_envelope)
            .field("webhook_event_id_header", &self.webhook_event_id_header)
            .field("null_optionals", &self.null_optionals)
            .field("record", &self.record)
            .finish()
    }
}

impl SimConfig {
    /// Reads every `SENT_SIM_*` variable (see the README); unset or empty
    /// variables keep their defaults, a bad value is an error naming the variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`SimConfig::from_env`] over any source of variables (used by tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = SimConfig {
            step_delay: Duration::from_millis(100),
            webhook_retry_base: Duration::from_secs(60),
            record: None,
            ..SimConfig::default()
        };
        config.record = get("SENT_SIM_RECORD")
            .map(|path| PathBuf::from(path.trim()))
            .or_else(|| record_file_in(get(RECORD_DIR_VAR)));

        if let Some(keys) = get("SENT_SIM_API_KEYS") {
            config.api_keys = keys
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect();
            if config.api_keys.is_empty() {
                bail!("SENT_SIM_API_KEYS must list at least one key");
            }
        }
        if let Some(url) = get("SENT_SIM_WEBHOOK_URL") {
            reqwest::Url::parse(&url)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https"))
                .with_context(|| format!("SENT_SIM_WEBHOOK_URL is not an http(s) URL: {url:?}"))?;
            config.webhook_url = Some(url);
        }
        if let Some(secret) = get("SENT_SIM_WEBHOOK_SECRET") {
            // The value is a secret: never echo it.
            config.webhook_secret = SigningKey::parse(&secret).ok_or_else(|| {
                anyhow::anyhow!("SENT_SIM_WEBHOOK_SECRET must be whsec_<base64> or base64")
            })?;
        }
        config.webhook_id = get("SENT_SIM_WEBHOOK_ID").map(|id| id.trim().to_owned());

        let millis = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(parse::<u64>(name, get(name))?.map_or(default, Duration::from_millis))
        };
        let secs = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(parse::<u64>(name, get(name))?.map_or(default, Duration::from_secs))
        };
        config.webhook_timeout = millis("SENT_SIM_WEBHOOK_TIMEOUT_MS", config.webhook_timeout)?;
        config.webhook_retry_base =
            millis("SENT_SIM_WEBHOOK_RETRY_BASE_MS", config.webhook_retry_base)?;
        config.step_delay = millis("SENT_SIM_STEP_DELAY_MS", config.step_delay)?;
        config.idempotency_ttl = secs("SENT_SIM_IDEMPOTENCY_TTL_SECS", config.idempotency_ttl)?;
        config.message_retention =
            secs("SENT_SIM_MESSAGE_RETENTION_SECS", config.message_retention)?;
        if let Some(n) = parse::<u32>("SENT_SIM_WEBHOOK_RETRIES", get("SENT_SIM_WEBHOOK_RETRIES"))?
        {
            if n > 10 {
                bail!("SENT_SIM_WEBHOOK_RETRIES must be at most 10, got {n}");
            }
            config.webhook_retries = n;
        }
        if let Some(n) = parse::<usize>(
            "SENT_SIM_WEBHOOK_CONCURRENCY",
            get("SENT_SIM_WEBHOOK_CONCURRENCY"),
        )? {
            if n == 0 {
                bail!("SENT_SIM_WEBHOOK_CONCURRENCY must be at least 1");
            }
            config.webhook_concurrency = n;
        }
        if let Some(n) = parse(
            "SENT_SIM_MESSAGES_PER_MINUTE",
            get("SENT_SIM_MESSAGES_PER_MINUTE"),
        )? {
            config.messages_per_minute = n;
        }
        if let Some(n) = parse(
            "SENT_SIM_RETRY_AFTER_SECS",
            get("SENT_SIM_RETRY_AFTER_SECS"),
        )? {
            config.retry_after_secs = n;
        }
        if let Some(channel) = get("SENT_SIM_AUTO_CHANNEL") {
            let channel = channel.trim().to_ascii_lowercase();
            if !matches!(channel.as_str(), "sms" | "whatsapp" | "rcs" | "mms") {
                bail!(
                    "SENT_SIM_AUTO_CHANNEL must be one of sms, whatsapp, rcs, mms, got {channel:?}"
                );
            }
            config.auto_channel = channel;
        }
        if let Some(style) = get("SENT_SIM_WEBHOOK_ENVELOPE") {
            config.webhook_envelope = match style.trim() {
                "event" => WebhookEnvelope::Event,
                "sub_type" => WebhookEnvelope::SubType,
                other => {
                    bail!("SENT_SIM_WEBHOOK_ENVELOPE must be event or sub_type, got {other:?}")
                }
            };
        }
        let flag = |name: &str, default: bool| -> anyhow::Result<bool> {
            match get(name).as_deref().map(str::trim) {
                None => Ok(default),
                Some("1" | "true") => Ok(true),
                Some("0" | "false") => Ok(false),
                Some(other) => bail!("{name} must be true or false, got {other:?}"),
            }
        };
        config.webhook_event_id_header = flag(
            "SENT_SIM_WEBHOOK_EVENT_ID_HEADER",
            config.webhook_event_id_header,
        )?;
        config.null_optionals = flag("SENT_SIM_NULL_OPTIONALS", config.null_optionals)?;
        let share = |name: &str, default: f64| -> anyhow::Result<f64> {
            match parse::<f64>(name, get(name))? {
                Some(value) if (0.0..=1.0).contains(&value) => Ok(value),
                Some(value) => bail!("{name} must be between 0.0 and 1.0, got {value}"),
                None => Ok(default),
            }
        };
        config.read_rate = share("SENT_SIM_READ_RATE", config.read_rate)?;
        config.fail_rate = share("SENT_SIM_FAIL_RATE", config.fail_rate)?;

        let faults = &mut config.faults;
        faults.rate_429 = share("SENT_SIM_FAULT_429", faults.rate_429)?;
        faults.rate_5xx = share("SENT_SIM_FAULT_5XX", faults.rate_5xx)?;
        faults.slow = share("SENT_SIM_FAULT_SLOW", faults.slow)?;
        faults.drop = share("SENT_SIM_FAULT_DROP", faults.drop)?;
        faults.duplicate_webhook =
            share("SENT_SIM_FAULT_DUPLICATE_WEBHOOK", faults.duplicate_webhook)?;
        faults.reorder_webhook = share("SENT_SIM_FAULT_REORDER_WEBHOOK", faults.reorder_webhook)?;
        if let Some(ms) = parse("SENT_SIM_SLOW_MS", get("SENT_SIM_SLOW_MS"))? {
            faults.slow_ms = ms;
        }
        if faults.rate_429 + faults.rate_5xx > 1.0 {
            bail!("SENT_SIM_FAULT_429 + SENT_SIM_FAULT_5XX must not exceed 1.0");
        }
        Ok(config)
    }
}

fn parse<T>(name: &str, value: Option<String>) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value
        .map(|text| {
            text.trim()
                .parse::<T>()
                .map_err(|err| anyhow::anyhow!("invalid value for {name}: {text:?} ({err})"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<SimConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SimConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn env_defaults_are_sent_like() {
        let config = from(&[]).unwrap();
        assert_eq!(config.api_keys, ["sim_test_key"]);
        assert_eq!(config.step_delay, Duration::from_millis(100));
        assert_eq!(config.webhook_retry_base, Duration::from_secs(60));
        assert_eq!(config.webhook_retries, 3);
        assert_eq!(config.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(config.faults, Faults::default());
        assert_eq!(config.webhook_envelope, WebhookEnvelope::Event);
        assert!(config.webhook_event_id_header);
        assert!(!config.null_optionals);
        assert_eq!(config.record, None);
    }

    #[test]
    fn reads_the_variants_and_recording() {
        let config = from(&[
            ("SENT_SIM_WEBHOOK_ENVELOPE", "sub_type"),
            ("SENT_SIM_WEBHOOK_EVENT_ID_HEADER", "false"),
            ("SENT_SIM_NULL_OPTIONALS", "1"),
            ("SENT_SIM_RECORD", "/tmp/sim.jsonl"),
            ("SENT_SIM_RECORD_DIR", "/tmp/ignored"),
        ])
        .unwrap();
        assert_eq!(config.webhook_envelope, WebhookEnvelope::SubType);
        assert!(!config.webhook_event_id_header);
        assert!(config.null_optionals);
        assert_eq!(config.record, Some(PathBuf::from("/tmp/sim.jsonl")));

        let first = from(&[("SENT_SIM_RECORD_DIR", "/tmp/rec")])
            .unwrap()
            .record
            .unwrap();
        let second = from(&[("SENT_SIM_RECORD_DIR", "/tmp/rec")])
            .unwrap()
            .record
            .unwrap();
        assert!(first.starts_with("/tmp/rec") && second.starts_with("/tmp/rec"));
        assert_ne!(first, second, "a fresh file each time");
        let name = first.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{}-", std::process::id())) && name.ends_with(".jsonl"));
    }

    #[test]
    fn reads_every_kind_of_value() {
        let config = from(&[
            ("SENT_SIM_API_KEYS", "a, b,,c"),
            (
                "SENT_SIM_WEBHOOK_URL",
                "http://127.0.0.1:8000/webhooks/sent",
            ),
            ("SENT_SIM_STEP_DELAY_MS", "5"),
            ("SENT_SIM_FAULT_429", "0.25"),
            ("SENT_SIM_SLOW_MS", "10"),
            ("SENT_SIM_AUTO_CHANNEL", "WhatsApp"),
        ])
        .unwrap();
        assert_eq!(config.api_keys, ["a", "b", "c"]);
        assert_eq!(config.step_delay, Duration::from_millis(5));
        assert_eq!(config.faults.rate_429, 0.25);
        assert_eq!(config.faults.slow_ms, 10);
        assert_eq!(config.auto_channel, "whatsapp");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("SENT_SIM_STEP_DELAY_MS", "fast"),
            ("SENT_SIM_FAIL_RATE", "1.5"),
            ("SENT_SIM_FAULT_DROP", "-0.1"),
            ("SENT_SIM_WEBHOOK_URL", "ftp://x"),
            ("SENT_SIM_WEBHOOK_SECRET", "whsec_!!!"),
            ("SENT_SIM_API_KEYS", ","),
            ("SENT_SIM_AUTO_CHANNEL", "fax"),
            ("SENT_SIM_WEBHOOK_ENVELOPE", "value"),
            ("SENT_SIM_WEBHOOK_EVENT_ID_HEADER", "maybe"),
            ("SENT_SIM_NULL_OPTIONALS", "yes"),
        ] {
            let err = from(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let err = from(&[("SENT_SIM_WEBHOOK_SECRET", "whsec_!!!")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("!!!"), "secret echoed: {err}");
    }
}
