//! The one HTTP client for webhooks we send (status callbacks, forwarded
//! provider events): signed by the Standard Webhooks scheme, and only to the
//! addresses an [`OutboundPolicy`] allows.
//!
//! Names are resolved by [`CheckedResolver`], which drops every address the
//! policy refuses: reqwest connects to exactly the addresses that were
//! checked, with no second lookup in between (DNS rebinding). A literal
//! address never reaches a resolver, so it is checked before the request
//! ([`refused_literal`]); no proxy is used (a proxy would resolve the name
//! itself) and no redirect is followed (its target would not be checked).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::outbound::{self, OutboundPolicy};
use common::signature::headers;

/// Longest error text stored per attempt.
pub const MAX_ERROR_LEN: usize = 500;

/// A client whose names are resolved by [`CheckedResolver`], with no proxy
/// and no redirects; `agent` names what it sends (`callbacks`, `forwards`).
pub fn client(
    timeout: Duration,
    policy: &OutboundPolicy,
    agent: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(CheckedResolver {
            policy: Arc::new(policy.clone()),
        }))
        .user_agent(format!(
            "sent-gateway-{agent}/{}",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// Resolves a host and keeps only the addresses the policy allows; fails
/// with [`Refused`] when none is left.
struct CheckedResolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port on every address.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|address| policy.allows(address.ip()));
            if allowed.is_empty() {
                let refused = refused.iter().map(SocketAddr::ip).collect();
                return Err(Box::new(Refused::Resolved(refused)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A request the policy does not let out, and the addresses that were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The URL's host is an address that is refused.
    Address(IpAddr),
    /// The URL's host is a name, and every address it resolves to is refused.
    Resolved(Vec<IpAddr>),
}

impl Refused {
    /// Why, naming the URL by `what` (`callback_url`, `FORWARD_STRIPE_URL`),
    /// never by itself: it may carry a token.
    pub fn describe(&self, what: &str) -> String {
        match self {
            Refused::Address(ip) => {
                format!("refused: {what} points at a non-global address ({ip})")
            }
            Refused::Resolved(ips) => {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                let list = if ips.is_empty() {
                    "none".to_owned()
                } else {
                    ips.join(", ")
                };
                format!("refused: {what} resolves only to non-global addresses ({list})")
            }
        }
    }
}

/// As a callback's attempt records it.
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("callback_url"))
    }
}

impl std::error::Error for Refused {}

/// A literal address in `url` that the policy refuses (names are checked by
/// [`CheckedResolver`]).
pub fn refused_literal(policy: &OutboundPolicy, url: &str) -> Option<Refused> {
    let url = reqwest::Url::parse(url).ok()?;
    let ip = outbound::host_address(&url.host()?)?;
    (!policy.allows(ip)).then_some(Refused::Address(ip))
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Outcome {
    /// A 2xx.
    Delivered(u16),
    /// Anything else: the status code if there was an answer, and why.
    Failed(Option<u16>, String),
    /// Not sent: the URL reaches no allowed address.
    Refused(Refused),
}

/// One signed POST.
pub struct SignedPost<'a> {
    pub url: &'a str,
    /// `webhook-id`: the same on every attempt of one delivery.
    pub webhook_id: &'a str,
    pub content_type: &'a str,
    pub body: Vec<u8>,
    /// Headers besides the signature's (e.g. a provider's own signature).
    pub extra: Vec<(&'static str, String)>,
}

/// POSTs `request` with `webhook-id`, `webhook-timestamp` (now) and
/// `webhook-signature`, the value `sign(timestamp, body, now)` gives.
pub async fn post_signed(
    client: &reqwest::Client,
    request: SignedPost<'_>,
    sign: impl FnOnce(&str, &[u8], DateTime<Utc>) -> String,
) -> Outcome {
    let now = Utc::now();
    let timestamp = now.timestamp().to_string();
    let signature = sign(&timestamp, &request.body, now);
    let mut builder = client
        .post(request.url)
        .header(reqwest::header::CONTENT_TYPE, request.content_type)
        .header(headers::WEBHOOK_ID, request.webhook_id)
        .header(headers::WEBHOOK_TIMESTAMP, &timestamp)
        .header(headers::WEBHOOK_SIGNATURE, signature);
    for (name, value) in request.extra {
        builder = builder.header(name, value);
    }
    match builder.body(request.body).send().await {
        Ok(response) if response.status().is_success() => {
            Outcome::Delivered(response.status().as_u16())
        }
        Ok(response) => {
            let status = response.status();
            Outcome::Failed(Some(status.as_u16()), format!("HTTP {status}"))
        }
        Err(e) => match refusal(&e) {
            Some(refused) => Outcome::Refused(refused),
            // Without the URL: it may carry a token.
            None => Outcome::Failed(None, truncate(describe(&e.without_url()))),
        },
    }
}

/// The [`Refused`] of [`CheckedResolver`] among the error's causes.
fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        cause = error.source();
    }
    None
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect not followed"
    } else {
        "request failed"
    };
    // The innermost cause says the most (connection refused, dns error, ...).
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

/// `text` cut to [`MAX_ERROR_LEN`] bytes on a char boundary.
pub fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_are_checked_before_any_request() {
        let none = OutboundPolicy::default();
        for (url, ip) in [
            ("http://127.0.0.1:9/x", "127.0.0.1"),
            ("http://[::1]/", "::1"),
            ("http://169.254.169.254/latest", "169.254.169.254"),
            ("http://2130706433/", "127.0.0.1"),
            ("http://[::ffff:10.0.0.5]/", "::ffff:10.0.0.5"),
        ] {
            assert_eq!(
                refused_literal(&none, url),
                Some(Refused::Address(ip.parse().unwrap())),
                "{url}"
            );
        }
        // Names go to the resolver; public and allowed addresses pass.
        for url in ["http://localhost/", "https://8.8.8.8/", "not a url"] {
            assert_eq!(refused_literal(&none, url), None, "{url}");
        }
        let loopback = OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(refused_literal(&loopback, "http://127.0.0.1:9/x"), None);
        let refused = Refused::Resolved(vec!["10.0.0.5".parse().unwrap()]);
        assert_eq!(
            refused.to_string(),
            "refused: callback_url resolves only to non-global addresses (10.0.0.5)"
        );
        assert_eq!(
            refused.describe("FORWARD_STRIPE_URL"),
            "refused: FORWARD_STRIPE_URL resolves only to non-global addresses (10.0.0.5)"
        );
    }

    /// The resolver's refusal comes back through reqwest's error, so the
    /// attempt can say why (and not be retried).
    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_not_connected_to() {
        let client = client(Duration::from_secs(5), &OutboundPolicy::default(), "tests").unwrap();
        let error = client
            .post("http://localhost:9/hook")
            .send()
            .await
            .unwrap_err();
        match refusal(&error) {
            Some(Refused::Resolved(ips)) => {
                assert!(
                    !ips.is_empty() && ips.iter().all(|ip| ip.is_loopback()),
                    "{ips:?}"
                )
            }
            other => panic!("expected a refusal, got {other:?} from {error:?}"),
        }
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let text = "é".repeat(400);
        let cut = truncate(text);
        assert!(cut.len() <= MAX_ERROR_LEN && cut.chars().all(|c| c == 'é'));
    }
}
