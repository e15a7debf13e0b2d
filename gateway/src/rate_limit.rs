//! Per-client rate limits by route class, as in the original integration:
//! sending routes, webhooks, everything else.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use common::rate::{Grant, Quota};

use crate::app::AppState;
use crate::auth::Client;
use crate::client_ip::client_address;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Messages,
    Webhooks,
    Default,
}

impl RouteClass {
    pub fn of(method: &Method, path: &str) -> Option<RouteClass> {
        if path == "/health/live" || path == "/metrics" {
            return None;
        }
        Some(
            if method == Method::POST && path.starts_with("/api/messages/") {
                RouteClass::Messages
            } else if path.starts_with("/webhooks/") {
                RouteClass::Webhooks
            } else {
                RouteClass::Default
            },
        )
    }

    fn name(self) -> &'static str {
        match self {
            RouteClass::Messages => "messages",
            RouteClass::Webhooks => "webhooks",
            RouteClass::Default => "default",
        }
    }
}

/// Runs after authentication, so an API key's client is known; others are limited by IP.
pub async fn limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(limiter) = &state.limiter else {
        return Ok(next.run(request).await);
    };
    let Some(class) = RouteClass::of(request.method(), request.uri().path()) else {
        return Ok(next.run(request).await);
    };
    let config = &state.config.gateway.rate_limit;
    let client = request.extensions().get::<Client>();
    let quota: Quota = match class {
        RouteClass::Messages => client.and_then(|c| c.rate_limit).unwrap_or(config.messages),
        RouteClass::Webhooks => config.webhooks,
        RouteClass::Default => config.default,
    };
    let who = match client {
        Some(c) => format!("key:{}", c.name),
        None => {
            let address = client_address(&request, &state.config.gateway.trusted_proxies);
            format!("ip:{}", address.as_deref().unwrap_or("unknown"))
        }
    };
    match limiter
        .check(&format!("{}:{who}", class.name()), quota)
        .await
    {
        Ok(Ok(())) => Ok(next.run(request).await),
        Ok(Err(wait)) => {
            tracing::info!(class = class.name(), client = %who, "rate limited");
            metrics::counter!(common::metrics::RATE_LIMITED, "class" => class.name()).increment(1);
            Err(ApiError::RateLimited {
                retry_after: wait.seconds(),
            })
        }
        // A rate-limit store outage must not take the gateway down with it.
        Err(error) => {
            tracing::warn!(%error, "rate limit store unavailable; request allowed");
            Ok(next.run(request).await)
        }
    }
}

/// Takes up to `n` more units of the client's sending budget, one per
/// message of a batch past the first (which the request itself took, here
/// above): what is left of it, and when more frees up. All of them when
/// rate limits are off, or when the limiter's store is unreachable (as for
/// any request).
pub async fn take_messages(state: &AppState, client: &Client, n: u32) -> Grant {
    let all = Grant {
        granted: n,
        retry_after: None,
    };
    let Some(limiter) = &state.limiter else {
        return all;
    };
    let quota = client
        .rate_limit
        .unwrap_or(state.config.gateway.rate_limit.messages);
    let key = format!("{}:key:{}", RouteClass::Messages.name(), client.name);
    match limiter.take_up_to(&key, quota, n).await {
        Ok(grant) => {
            if grant.granted < n {
                tracing::info!(client = %client.name, asked = n, granted = grant.granted, "batch rate limited");
                metrics::counter!(common::metrics::RATE_LIMITED, "class" => RouteClass::Messages.name())
                    .increment(u64::from(n - grant.granted));
            }
            grant
        }
        Err(error) => {
            tracing::warn!(%error, "rate limit store unavailable; batch allowed");
            all
        }
    }
}
