//! The ceiling to compare against: a bare axum handler that parses a JSON
//! body and answers JSON, with nothing behind it.

use axum::{Json, Router, routing::post};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("BARE_BIND").unwrap_or_else(|_| "127.0.0.1:8099".into());
    let app = Router::new().route(
        "/api/messages/send",
        post(|Json(body): Json<Value>| async move {
            Json(json!({"message_id": ulid::Ulid::generate().to_string(), "status": "queued", "echo": body["phone_number"]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
