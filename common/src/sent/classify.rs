//! What an answer (or a failure to get one) from `POST /v3/messages` means for
//! the message, following SENT_API.md's table: accepted, retry later, or give
//! up. Pure functions, so the table is tested without a network.

use std::time::{Duration, SystemTime};

use super::wire::{Envelope, SendData};

/// The outcome of one send attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent took the message (a 2xx): one id per recipient and channel.
    Accepted {
        provider_ids: Vec<String>,
        /// Sent's request id (`meta.request_id` or `X-Request-Id`).
        request_id: Option<String>,
        /// Answered from Sent's idempotency cache (`Idempotent-Replayed: true`):
        /// an earlier attempt had already been accepted.
        replayed: bool,
        /// Set when no Sent id could be read from the answer: what was
        /// missing. Sent has the message, but no webhook can be matched to
        /// it, so this is an anomaly to log, count and show on the message.
        unreadable: Option<String>,
    },
    /// Worth trying again, no sooner than `after` when Sent said so (`Retry-After`).
    Retry {
        code: String,
        message: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help: fail the message with Sent's code.
    Permanent { code: String, message: String },
}

impl SendOutcome {
    pub fn is_retry(&self) -> bool {
        matches!(self, SendOutcome::Retry { .. })
    }
}

/// Error codes of failures that never reached an answer from Sent.
pub const CODE_TIMEOUT: &str = "timeout";
pub const CODE_CONNECT: &str = "connect_error";
pub const CODE_NETWORK: &str = "network_error";
/// `last_error_code` of a message Sent took without an id we could read.
pub const CODE_NO_ID: &str = "sent_answer_without_id";

/// Longest `Retry-After` honoured as given; a larger value is clamped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Classifies an HTTP answer from `POST /v3/messages`.
///
/// | status | outcome |
/// | --- | --- |
/// | 2xx | accepted |
/// | 408 | retry |
/// | 409 `CONFLICT_001` (same key in flight) | retry |
/// | 429 `LIMIT_001` (account cap) | permanent |
/// | 429 otherwise (`BUSINESS_002`) | retry, after `Retry-After` |
/// | 400, 401, 402, 403, 404, any other 409, 422, any other 4xx | permanent |
/// | 5xx, anything else | retry |
///
/// Every field of the answer may be `null` or missing (the SDK's types say
/// so): each is read on its own, so a `null` never costs the ids or the
/// error code that are present.
pub fn classify_response(
    status: u16,
    retry_after: Option<Duration>,
    replayed: bool,
    body: &[u8],
) -> SendOutcome {
    let envelope: Result<Envelope<SendData>, _> = serde_json::from_slice(body);
    if (200..300).contains(&status) {
        let (provider_ids, request_id, unreadable) = match envelope {
            Ok(envelope) => {
                let request_id = envelope.request_id().map(str::to_owned);
                let (ids, missing) = provider_ids(envelope.data);
                (ids, request_id, missing)
            }
            Err(error) => (
                Vec::new(),
                None,
                Some(format!("body is not a v3 envelope ({error})")),
            ),
        };
        return SendOutcome::Accepted {
            provider_ids,
            request_id,
            replayed,
            unreadable,
        };
    }

    let error = envelope.ok().and_then(|e| e.error);
    let code = error
        .as_ref()
        .and_then(|e| e.code.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("HTTP_{status}"));
    let message = error
        .and_then(|e| e.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("Sent answered HTTP {status}"));

    let retry = |after| SendOutcome::Retry {
        code: code.clone(),
        message: message.clone(),
        after,
    };
    match status {
        408 => retry(retry_after),
        409 if code == "CONFLICT_001" => retry(retry_after),
        429 if code == "LIMIT_001" => SendOutcome::Permanent { code, message },
        429 => retry(retry_after),
        400..=499 => SendOutcome::Permanent { code, message },
        _ => retry(retry_after),
    }
}

/// Every `recipients[].message_id` present, and, when there is none, what
/// was missing.
fn provider_ids(data: Option<SendData>) -> (Vec<String>, Option<String>) {
    let Some(data) = data else {
        return (Vec::new(), Some("data is null or missing".into()));
    };
    let Some(recipients) = data.recipients else {
        return (
            Vec::new(),
            Some("data.recipients is null or missing".into()),
        );
    };
    let total = recipients.len();
    let ids: Vec<String> = recipients
        .into_iter()
        .flatten()
        .filter_map(|r| r.message_id)
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    let missing = ids.is_empty().then(|| {
        if total == 0 {
            "data.recipients is empty".to_owned()
        } else {
            format!("no message_id in any of {total} recipients")
        }
    });
    (ids, missing)
}

/// Classifies a request that got no (complete) answer: always retryable, and
/// safe to retry because the same `Idempotency-Key` goes with it.
pub fn classify_transport(error: &reqwest::Error) -> SendOutcome {
    let code = if error.is_timeout() {
        CODE_TIMEOUT
    } else if error.is_connect() {
        CODE_CONNECT
    } else {
        CODE_NETWORK
    };
    // The chain of sources names the actual cause (reset, refused, ...).
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SendOutcome::Retry {
        code: code.to_owned(),
        message,
        after: None,
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date, clamped to [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let after = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let at: SystemTime = chrono::DateTime::parse_from_rfc2822(value).ok()?.into();
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(code: &str) -> Vec<u8> {
        format!(
            r#"{{"success":false,"data":null,"error":{{"code":"{code}","message":"m {code}","details":null,"doc_url":null}},
                "meta":{{"request_id":"r","timestamp":"t","version":"v3"}}}}"#
        )
        .into_bytes()
    }

    fn kind(outcome: &SendOutcome) -> &'static str {
        match outcome {
            SendOutcome::Accepted { .. } => "accepted",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Permanent { .. } => "permanent",
        }
    }

    /// SENT_API.md's table, row by row.
    #[test]
    fn follows_the_table() {
        let cases: &[(u16, &str, &str)] = &[
            (400, "VALIDATION_001", "permanent"),
            (400, "VALIDATION_002", "permanent"),
            (400, "VALIDATION_006", "permanent"),
            (401, "AUTH_001", "permanent"),
            (401, "AUTH_002", "permanent"),
            (402, "PAYMENT_001", "permanent"),
            (403, "AUTH_004", "permanent"),
            (403, "AUTH_007", "permanent"),
            (404, "RESOURCE_002", "permanent"),
            (408, "TIMEOUT_001", "retry"),
            (409, "CONFLICT_001", "retry"),
            (409, "CONFLICT_002", "permanent"),
            (422, "BUSINESS_003", "permanent"),
            (422, "BUSINESS_004", "permanent"),
            (422, "BUSINESS_005", "permanent"),
            (422, "BUSINESS_007", "permanent"),
            (422, "BUSINESS_008", "permanent"),
            (429, "BUSINESS_002", "retry"),
            (429, "LIMIT_001", "permanent"),
            (500, "INTERNAL_001", "retry"),
            (502, "INTERNAL_002", "retry"),
            (503, "SERVICE_001", "retry"),
            (504, "INTERNAL_004", "retry"),
        ];
        for &(status, code, expected) in cases {
            let outcome = classify_response(status, None, false, &error_body(code));
            assert_eq!(kind(&outcome), expected, "{status} {code}");
            match outcome {
                SendOutcome::Retry { code: c, .. } | SendOutcome::Permanent { code: c, .. } => {
                    assert_eq!(c, code)
                }
                SendOutcome::Accepted { .. } => unreachable!(),
            }
        }
    }

    #[test]
    fn retry_after_is_kept_on_429_and_503() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            classify_response(429, after, false, &error_body("BUSINESS_002")),
            SendOutcome::Retry {
                code: "BUSINESS_002".into(),
                message: "m BUSINESS_002".into(),
                after
            }
        );
        assert!(matches!(
            classify_response(503, after, false, &error_body("SERVICE_001")),
            SendOutcome::Retry { after: Some(_), .. }
        ));
    }

    #[test]
    fn answers_without_an_envelope_are_named_by_status() {
        assert_eq!(
            classify_response(502, None, false, b"<html>bad gateway</html>"),
            SendOutcome::Retry {
                code: "HTTP_502".into(),
                message: "Sent answered HTTP 502".into(),
                after: None
            }
        );
        assert!(
            matches!(classify_response(413, None, false, b""), SendOutcome::Permanent { code, .. } if code == "HTTP_413")
        );
        assert!(matches!(
            classify_response(429, None, false, b""),
            SendOutcome::Retry { .. }
        ));
    }

    #[test]
    fn a_202_yields_every_recipient_id() {
        let body = br#"{"success":true,"data":{"status":"QUEUED","template_id":"t","template_name":null,
            "recipients":[{"message_id":"m1","to":"+14155550123","channel":"sms","body":null},
                          {"message_id":"m2","to":"+14155550123","channel":"whatsapp","body":null}]},
            "error":null,"meta":{"request_id":"req-1","timestamp":"t","version":"v3"}}"#;
        assert_eq!(
            classify_response(202, None, true, body),
            SendOutcome::Accepted {
                provider_ids: vec!["m1".into(), "m2".into()],
                request_id: Some("req-1".into()),
                replayed: true,
                unreadable: None,
            }
        );
        // A 2xx is acceptance even when the body cannot be read, but it says
        // why no id came with it.
        assert!(
            matches!(classify_response(200, None, false, b"ok"), SendOutcome::Accepted { provider_ids, unreadable: Some(why), .. } if provider_ids.is_empty() && why.contains("not a v3 envelope"))
        );
        for (body, why) in [
            (&br#"{"data":null}"#[..], "data is null"),
            (
                br#"{"data":{"recipients":null}}"#,
                "data.recipients is null",
            ),
            (br#"{"data":{"recipients":[]}}"#, "data.recipients is empty"),
            (
                br#"{"data":{"recipients":[{"message_id":null},null]}}"#,
                "no message_id in any of 2",
            ),
        ] {
            match classify_response(202, None, false, body) {
                SendOutcome::Accepted {
                    provider_ids,
                    unreadable: Some(found),
                    ..
                } => {
                    assert!(provider_ids.is_empty());
                    assert!(found.starts_with(why), "{found}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
