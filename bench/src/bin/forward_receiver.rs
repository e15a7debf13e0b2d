//! `forward_receiver`: the operator's service that `bench/forward.sh`
//! forwards to. Answers every `POST /<destination>` 200 at once and counts
//! each `webhook-id` once (a retry or a re-delivery after a lost lease is a
//! duplicate, counted apart), with the end-to-end latency of each: its
//! arrival minus the `bench_sent_at_us` the load generator wrote into the
//! provider's body before posting it to the gateway (same machine, same
//! clock). It does not verify the signatures (worker/tests/forwarding.rs
//! does), so it costs the run as little as a receiver can.
//!
//! `GET /stats`: per destination, unique events, duplicates, the first
//! `bench_sent_at_us` and the last arrival (Unix seconds), and latency
//! percentiles in milliseconds. `DELETE /stats` starts counting afresh.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};

struct Destination {
    seen: HashSet<String>,
    duplicates: u64,
    /// Microseconds from the post to the gateway to the arrival here.
    latency_us: hdrhistogram::Histogram<u64>,
    first_sent_us: i64,
    last_arrival_us: i64,
}

type Stats = Arc<Mutex<BTreeMap<String, Destination>>>;

async fn receive(
    State(stats): State<Stats>,
    Path(destination): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let arrival = chrono::Utc::now().timestamp_micros();
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "no webhook-id");
    };
    let sent = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["bench_sent_at_us"].as_i64());
    let mut stats = stats.lock().unwrap();
    let d = stats.entry(destination).or_insert_with(|| Destination {
        seen: HashSet::new(),
        duplicates: 0,
        latency_us: hdrhistogram::Histogram::new(3).unwrap(),
        first_sent_us: i64::MAX,
        last_arrival_us: 0,
    });
    if !d.seen.insert(id.to_owned()) {
        d.duplicates += 1;
        return (StatusCode::OK, "duplicate");
    }
    d.last_arrival_us = d.last_arrival_us.max(arrival);
    if let Some(sent) = sent {
        d.first_sent_us = d.first_sent_us.min(sent);
        let _ = d
            .latency_us
            .record(arrival.saturating_sub(sent).max(0) as u64);
    }
    (StatusCode::OK, "ok")
}

async fn stats(State(stats): State<Stats>) -> Json<Value> {
    let stats = stats.lock().unwrap();
    let by_destination: serde_json::Map<String, Value> = stats
        .iter()
        .map(|(name, d)| {
            let ms = |q: f64| d.latency_us.value_at_quantile(q) as f64 / 1000.0;
            (
                name.clone(),
                json!({
                    "unique": d.seen.len(),
                    "duplicates": d.duplicates,
                    "first_sent": d.first_sent_us as f64 / 1e6,
                    "last_arrival": d.last_arrival_us as f64 / 1e6,
                    "p50_ms": ms(0.5),
                    "p99_ms": ms(0.99),
                    "max_ms": d.latency_us.max() as f64 / 1000.0,
                }),
            )
        })
        .collect();
    Json(Value::Object(by_destination))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("RECEIVER_BIND").unwrap_or_else(|_| "127.0.0.1:8097".into());
    let state: Stats = Arc::default();
    let app = Router::new()
        .route(
            "/stats",
            get(stats).delete(|State(stats): State<Stats>| async move {
                stats.lock().unwrap().clear();
            }),
        )
        .route("/{destination}", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
