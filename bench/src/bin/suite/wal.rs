//! `suite wal`: what one message costs Postgres over its whole life, in WAL
//! bytes. N messages go through the whole product (accepted by the gateway,
//! sent by a worker, Sent's `sent` and `delivered` webhooks through the inbox,
//! a signed status callback for each change delivered to a local receiver),
//! on a Postgres cluster of the run's own, so that the WAL written between
//! the first submission and the last callback is this run's and nobody
//! else's. `pg_walinspect` then says which tables and indexes wrote it.
//!
//! Run the same command against another build's binaries (`--bin DIR`) to
//! compare layouts: `bench/wal.sh` does both, alternating.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::stack::{API_KEY, Stack, StackOptions};
use crate::statements::{self, Statement};

pub struct Plan {
    pub messages: u64,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// Directory of the gateway, worker and sent-sim binaries to measure.
    pub bin: Option<PathBuf>,
}

pub struct WalReport {
    pub bin: String,
    pub messages: u64,
    pub seconds: f64,
    pub wal_bytes: u64,
    pub fpi_bytes: u64,
    pub records: u64,
    /// Table or index and kind of record, WAL bytes, records (largest first).
    pub relations: Vec<(String, u64, u64)>,
    pub callbacks: u64,
    pub statements: Vec<Statement>,
}

impl WalReport {
    pub fn per_message(&self) -> f64 {
        self.wal_bytes as f64 / self.messages as f64
    }
}

/// Submissions before the measurement, so that the measured messages find
/// warm caches, open connections and already-split index pages.
const WARM_UP: u64 = 200;

pub async fn run(plan: Plan, results: &std::path::Path) -> anyhow::Result<WalReport> {
    let (receiver, received) = receiver().await?;
    let mut stack = Stack::start(
        StackOptions {
            name: "wal".into(),
            workers: 2,
            private_redis: false,
            private_postgres: true,
            redis_cluster: false,
            log_level: "warn",
            bin: plan.bin.clone(),
            env: vec![
                // Every message lives the same life: accepted, sent, delivered.
                ("SENT_SIM_FAIL_RATE".into(), "0".into()),
                (
                    "CALLBACK_ALLOW_PRIVATE_NETWORKS".into(),
                    "127.0.0.0/8".into(),
                ),
                // Production takes https callback URLs only; the receiver is
                // plain http. Nothing the profile changes writes to Postgres.
                ("APP_ENV".into(), "development".into()),
            ],
        },
        results,
    )
    .await?;
    let pool = stack.database().await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(&pool)
        .await?;
    let callback_url = format!("http://{receiver}/callbacks");

    submit(
        &stack.gateway_url,
        &callback_url,
        0,
        WARM_UP,
        plan.concurrency,
    )
    .await?;
    settle(&mut stack, &pool, WARM_UP).await?;

    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let callbacks_before = received.load(Ordering::Relaxed);
    statements::reset(&pool).await?;
    let start: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await?;
    let began = Instant::now();
    submit(
        &stack.gateway_url,
        &callback_url,
        WARM_UP,
        plan.messages,
        plan.concurrency,
    )
    .await?;
    settle(&mut stack, &pool, WARM_UP + plan.messages).await?;
    let seconds = began.elapsed().as_secs_f64();
    let end: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&pool)
        .await?;
    // pg_walinspect reads only flushed WAL ("cannot accept future end
    // LSN"), and the last records may still be in the WAL buffers.
    while sqlx::query_scalar::<_, bool>("SELECT pg_current_wal_flush_lsn() < $1::pg_lsn")
        .bind(&end)
        .fetch_one(&pool)
        .await?
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (wal_bytes, records, fpi_bytes): (i64, i64, i64) = sqlx::query_as(
        "SELECT ($2::pg_lsn - $1::pg_lsn)::bigint, count(*), coalesce(sum(fpi_length), 0)::bigint
           FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)",
    )
    .bind(&start)
    .bind(&end)
    .fetch_one(&pool)
    .await?;
    // A record's first block names the relation it changed (records without
    // one, such as commits, are grouped by what wrote them); with the kind
    // of record, that says which write to redesign.
    let relations: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT coalesce(pg_filenode_relation(0, substring(block_ref FROM 'rel \\d+/\\d+/(\\d+)')::oid)::regclass::text,
                         '-') || ' ' || resource_manager || ' ' || split_part(record_type, ' ', 1),
                sum(record_length)::bigint, count(*)
           FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
          GROUP BY 1 ORDER BY 2 DESC",
    )
    .bind(&start)
    .bind(&end)
    .fetch_all(&pool)
    .await?;
    let statements = statements::costliest(&pool).await?;
    let bin = plan
        .bin
        .map_or_else(|| "this build".to_owned(), |p| p.display().to_string());
    let report = WalReport {
        bin,
        messages: plan.messages,
        seconds,
        wal_bytes: wal_bytes as u64,
        fpi_bytes: fpi_bytes as u64,
        records: records as u64,
        relations: relations
            .into_iter()
            .map(|(name, bytes, n)| (name, bytes as u64, n as u64))
            .collect(),
        callbacks: received.load(Ordering::Relaxed) - callbacks_before,
        statements,
    };
    pool.close().await;
    stack.stop().await?;
    Ok(report)
}

/// Submits messages `first..first + count` with at most `concurrency` in flight.
async fn submit(
    gateway: &str,
    callback_url: &str,
    first: u64,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(first));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, next) = (http.clone(), next.clone());
        let (url, callback_url) = (
            format!("{gateway}/api/messages/send"),
            callback_url.to_owned(),
        );
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= first + count {
                    return anyhow::Ok(());
                }
                let response = http
                    .post(&url)
                    .bearer_auth(API_KEY.as_str())
                    // Never ending in 0000, which sent-sim fails.
                    .json(&json!({
                        "phone_number": format!("+1415555{:04}", 1000 + n % 9000),
                        "template_id": "tmpl_wal",
                        "template_name": "wal",
                        "parameters": {"n": n.to_string()},
                        "channels": ["sms"],
                        "callback_url": callback_url,
                    }))
                    .send()
                    .await?;
                if response.status() != 202 {
                    bail!(
                        "submission answered {}: {}",
                        response.status(),
                        response.text().await?
                    );
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Waits until `total` messages have been delivered, every callback
/// delivered, and the inbox has nothing left to apply; gives up when nothing
/// moved for a minute, saying where the messages stopped.
async fn settle(stack: &mut Stack, pool: &sqlx::PgPool, total: u64) -> anyhow::Result<()> {
    let mut last = None;
    let mut moved = Instant::now();
    loop {
        let progress: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM messages WHERE status = 'delivered'),
                    (SELECT count(*) FROM status_callbacks WHERE state = 'pending'),
                    (SELECT count(*) FROM webhook_inbox WHERE state IN ('pending', 'unmatched'))",
        )
        .fetch_one(pool)
        .await?;
        let (delivered, callbacks_pending, inbox_pending) = progress;
        if delivered as u64 >= total && callbacks_pending == 0 && inbox_pending == 0 {
            return Ok(());
        }
        stack.check_alive()?;
        if last != Some(progress) {
            (last, moved) = (Some(progress), Instant::now());
        } else if moved.elapsed() > Duration::from_secs(60) {
            let statuses: String = sqlx::query_scalar(
                "SELECT string_agg(status || ' ' || n, ', ')
                   FROM (SELECT status, count(*) n FROM messages GROUP BY 1 ORDER BY 1) s",
            )
            .fetch_one(pool)
            .await?;
            bail!(
                "stuck for 60 s: {delivered}/{total} delivered ({statuses}), \
                 {callbacks_pending} callbacks and {inbox_pending} webhooks pending"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A callback receiver that answers 204 and counts.
async fn receiver() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/callbacks",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the callback receiver")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, count))
}
