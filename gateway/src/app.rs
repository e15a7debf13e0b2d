//! The application: state, every route, and the layers around them.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use common::config::{Config, Profile};
use common::queue::SendQueue;
use common::rate::RateLimiter;
use common::redis_conn::Redis;
use common::store::Store;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::accept::Accepter;
use crate::auth::{self, Access, FailedAuth, KeyRing};
use crate::error::status_body;
use crate::inbox_writer::InboxWriter;
use crate::openapi;
use crate::rate_limit;
use crate::routes::{dashboard, events, health, lookup, messages, webhooks};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub queue: SendQueue,
    pub redis: Redis,
    pub accepter: Accepter,
    pub keys: Arc<KeyRing>,
    pub limiter: Option<RateLimiter>,
    /// Failed authentications per client address; `None` without rate limits.
    pub auth_failures: Option<Arc<FailedAuth>>,
    /// Inbound webhook verifiers, one per configured provider.
    pub webhooks: Arc<webhooks::Verifiers>,
    /// Group-committing writer of the webhook inbox.
    pub inbox: InboxWriter,
    /// Cancelled when shutdown begins (see [`crate::serve`]).
    pub draining: CancellationToken,
}

impl AppState {
    pub async fn new(config: Config, store: Store, redis: Redis) -> anyhow::Result<AppState> {
        let queue = SendQueue::new(redis.clone(), &config.redis_prefix, config.sharding);
        let limiter = match (
            &config.gateway.rate_limit.enabled,
            &config.gateway.rate_limit.storage,
        ) {
            (false, _) => None,
            (true, None) => Some(RateLimiter::memory()),
            (true, Some(target)) => {
                let conn = common::redis_conn::open(target, &config.redis_tls)
                    .await
                    .map_err(|e| anyhow::anyhow!("RATELIMIT_STORAGE_URI: {e}"))?;
                Some(RateLimiter::redis(conn, config.redis_prefix.clone()))
            }
        };
        let webhooks = Arc::new(webhooks::Verifiers::from_config(&config.gateway.webhooks)?);
        let rate_limit = &config.gateway.rate_limit;
        let auth_failures = rate_limit
            .enabled
            .then(|| Arc::new(FailedAuth::new(rate_limit.auth_failures)));
        common::metrics::install();
        Ok(AppState {
            webhooks,
            auth_failures,
            inbox: InboxWriter::start(store.clone()),
            accepter: Accepter::start(store.clone(), queue.clone(), config.gateway.idempotency_ttl),
            keys: Arc::new(KeyRing::new(&config.api_keys, store.clone())),
            config: Arc::new(config),
            store,
            queue,
            redis,
            limiter,
            draining: CancellationToken::new(),
        })
    }

    pub fn allow_http_callbacks(&self) -> bool {
        self.config.profile != Profile::Production
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the gateway, in one place, by who may call it.
///
/// Routes are registered only with `routes!`, which takes each route's method
/// and path from its handler's `#[utoipa::path]`: a route cannot be added
/// without its OpenAPI description, nor described at a path it is not served
/// on. `layer` puts each group's layers on: the router's authentication and
/// rate limits, or nothing for the document ([`document`]), whose
/// security requirements are set from the same groups.
pub fn routes(
    layer: impl Fn(OpenApiRouter<AppState>, Access) -> OpenApiRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(messages::send))
        .routes(utoipa_axum::routes!(messages::welcome))
        .routes(utoipa_axum::routes!(messages::order_confirmation))
        .routes(utoipa_axum::routes!(messages::batch))
        .routes(utoipa_axum::routes!(messages::list))
        .routes(utoipa_axum::routes!(messages::get_one))
        .routes(utoipa_axum::routes!(messages::cancel))
        .routes(utoipa_axum::routes!(events::list))
        .routes(utoipa_axum::routes!(lookup::lookup));
    let dashboard_data = OpenApiRouter::new().routes(utoipa_axum::routes!(dashboard::data));
    let open = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(webhooks::sent))
        .routes(utoipa_axum::routes!(webhooks::stripe))
        .routes(utoipa_axum::routes!(webhooks::telegram))
        .routes(utoipa_axum::routes!(health::index))
        .routes(utoipa_axum::routes!(health::health))
        .routes(utoipa_axum::routes!(health::live))
        .routes(utoipa_axum::routes!(health::metrics))
        .routes(utoipa_axum::routes!(health::openapi_json))
        .routes(utoipa_axum::routes!(dashboard::page))
        .routes(utoipa_axum::routes!(dashboard::script))
        .routes(utoipa_axum::routes!(dashboard::stylesheet));
    let group = |routes, access| layer(openapi::secure(routes, access), access);
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(group(api, Access::ApiKey))
        .merge(group(dashboard_data, Access::Dashboard))
        .merge(group(open, Access::Open))
}

/// The OpenAPI document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    openapi::finish(routes(|group, _| group).into_openapi())
}

/// The router: [`routes`] with their layers, and the layers around them all.
pub fn router(state: AppState) -> Router {
    let (routes, _) = routes(|routes, access| {
        let routes = routes.route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ));
        // Authentication runs first, so the rate limit knows the client.
        match access {
            Access::ApiKey => routes.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_api_key,
            )),
            Access::Dashboard => routes.route_layer(middleware::from_fn_with_state(
                state.clone(),
                dashboard::require_key_unless_public,
            )),
            Access::Open => routes,
        }
    })
    .split_for_parts();

    let max_body = state.config.gateway.max_body_bytes;
    let timeout = state.config.gateway.request_timeout;
    let draining = state.draining.clone();
    routes
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .layer(middleware::from_fn(record_http_metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(draining, close_when_draining))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(),
                        request_id = %id, client = tracing::field::Empty)
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn(security_headers))
                .layer(middleware::from_fn(json_errors))
                .layer(CatchPanicLayer::custom(|_| panic_response()))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
}

/// The headers flask-talisman set, on every response.
const SECURITY_HEADERS: [(HeaderName, &str); 6] = [
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
    (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    (header::X_XSS_PROTECTION, "1; mode=block"),
];

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// While the gateway shuts down, each response closes its connection, so a
/// client's next request opens one to another instance instead of racing
/// the close of this one.
async fn close_when_draining(
    State(draining): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if draining.is_cancelled() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Counts requests and their latency by route template (never the raw path,
/// which would make a label per message id).
async fn record_http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(common::metrics::HTTP_DURATION, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(common::metrics::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// Gives every error response the contract's JSON shape, including the ones
/// the framework makes itself (404, 405, timeouts).
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Response::from_parts(
            parts,
            Body::from(serde_json::to_vec(&status_body(status)).unwrap_or_default()),
        );
    }
    response
}

fn panic_response() -> Response {
    tracing::error!("handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(status_body(StatusCode::INTERNAL_SERVER_ERROR)),
    )
        .into_response()
}
