//! The HTTP surface: Sent's v3 routes and the simulator's own `/_sim` routes.

mod admin;
mod messages;
pub(crate) mod response;
pub(crate) mod validate;
pub(crate) mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use uuid::Uuid;

use crate::Sim;
use crate::stats::bump;
use response::Failure;

/// Every route; reading this function tells all the simulator serves.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    let router = routes(Arc::clone(&sim));
    if sim.recorder.is_some() {
        router.layer(axum::middleware::from_fn_with_state(
            sim,
            crate::record::record,
        ))
    } else {
        router
    }
}

fn routes(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/v3/messages", post(messages::send))
        .route("/v3/messages/{id}", get(messages::get))
        .route("/health", get(admin::health))
        .route("/_sim/stats", get(admin::stats))
        .route(
            "/_sim/faults",
            get(admin::get_faults).post(admin::set_faults),
        )
        .route(
            "/_sim/webhook",
            get(admin::get_webhook).post(admin::set_webhook),
        )
        .route("/_sim/inbound", post(admin::inbound))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(sim)
}

pub(crate) fn new_request_id() -> String {
    Uuid::new_v4().to_string()
}

/// The account (index of the API key) of a request, or Sent's 401.
pub(crate) fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<usize, Failure> {
    let Some(value) = headers.get("x-api-key") else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "AUTH_001",
            "Missing API key: send it in the x-api-key header",
        ));
    };
    let key = value.as_bytes();
    sim.accounts
        .iter()
        .position(|account| account.api_key.as_bytes() == key)
        .ok_or_else(|| Failure::new(StatusCode::UNAUTHORIZED, "AUTH_002", "Invalid API key"))
}

async fn not_found(State(sim): State<Arc<Sim>>) -> Response {
    bump(&sim.counters.requests);
    Failure::new(StatusCode::NOT_FOUND, "RESOURCE_001", "No such route").into_response(
        &new_request_id(),
        sim.limiter.peek(None),
        sim.config.null_optionals,
    )
}

async fn method_not_allowed(State(sim): State<Arc<Sim>>) -> Response {
    bump(&sim.counters.requests);
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "VALIDATION_001",
        "Method not allowed on this route",
    )
    .into_response(
        &new_request_id(),
        sim.limiter.peek(None),
        sim.config.null_optionals,
    )
}
