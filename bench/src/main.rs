//! `loadgen`: a closed-loop HTTP/1.1 load generator. Each of `--connections`
//! keep-alive connections sends its next request as soon as the previous
//! answer arrives, for `--seconds` (or until `--requests` have been sent);
//! latencies go into an HDR histogram.
//! Prints one JSON line of figures, for the bench scripts to tabulate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(args_override_self = true)]
struct Args {
    /// host:port of the server.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: String,
    /// send | batch | webhook | stripe | telegram
    #[arg(long, default_value = "send")]
    scenario: String,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Messages per batch request (batch scenario).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    #[arg(long, default_value = "bench-key-0123456789")]
    api_key: String,
    /// Webhook signing secret (webhook scenario: Sent's `whsec_`; stripe:
    /// Stripe's `whsec_`, the HMAC key as is; telegram: the secret token).
    #[arg(long, default_value = "")]
    webhook_secret: String,
    /// Requests per second across all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Send path (defaults per scenario).
    #[arg(long)]
    path: Option<String>,
    /// Webhook scenario: events name Sent message ids `<prefix><n>` for n in
    /// 0..sent_ids, spread over connections (0 = unique ids no message has).
    #[arg(long, default_value_t = 0)]
    sent_ids: u64,
    #[arg(long, default_value = "bench-sent-")]
    sent_id_prefix: String,
    /// Webhook scenario: start at message `<prefix><offset>` (a second run
    /// takes messages the first did not).
    #[arg(long, default_value_t = 0)]
    sent_id_offset: u64,
    /// Telegram scenario: the first `update_id` (each connection takes every
    /// `connections`-th after it).
    #[arg(long, default_value_t = 1)]
    first_update_id: u64,
    /// Stop after this many requests in total (0 = only `--seconds` limits).
    #[arg(long, default_value_t = 0)]
    requests: u64,
}

struct Report {
    histogram: hdrhistogram::Histogram<u64>,
    ok: u64,
    errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let args = Arc::new(args);
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..args.connections {
        let (args, issued) = (args.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            run_connection(&args, worker, deadline, &issued).await
        }));
    }
    let mut total = Report {
        histogram: hdrhistogram::Histogram::new(3)?,
        ok: 0,
        errors: 0,
        statuses: Default::default(),
    };
    for task in tasks {
        let report = task.await??;
        total.histogram.add(&report.histogram)?;
        total.ok += report.ok;
        total.errors += report.errors;
        for (status, n) in report.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_request = if args.scenario == "batch" {
        args.batch_size as f64
    } else {
        1.0
    };
    let h = &total.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({
            "scenario": args.scenario,
            "connections": args.connections,
            "seconds": elapsed,
            "requests_ok": total.ok,
            "errors": total.errors,
            "statuses": total.statuses,
            "requests_per_sec": total.ok as f64 / elapsed,
            "messages_per_sec": total.ok as f64 * per_request / elapsed,
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": h.max() as f64 / 1000.0,
        })
    );
    Ok(())
}

async fn run_connection(
    args: &Args,
    worker: usize,
    deadline: Instant,
    issued: &AtomicU64,
) -> anyhow::Result<Report> {
    let mut report = Report {
        histogram: hdrhistogram::Histogram::new(3)?,
        ok: 0,
        errors: 0,
        statuses: Default::default(),
    };
    let stream = TcpStream::connect(&args.target).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let pause = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut next_at = Instant::now();
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        if let Some(pause) = pause {
            tokio::time::sleep_until(next_at.into()).await;
            next_at += pause;
        }
        if args.requests > 0 && issued.fetch_add(1, Ordering::Relaxed) >= args.requests {
            break;
        }
        sequence += 1;
        let request = build_request(args, worker, sequence)?;
        let sent = Instant::now();
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                report.histogram.record(sent.elapsed().as_micros() as u64)?;
                *report.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    report.ok += 1;
                } else {
                    report.errors += 1;
                }
            }
            Err(_) => {
                report.errors += 1;
                break;
            }
        }
        if sender.ready().await.is_err() {
            break;
        }
    }
    Ok(report)
}

fn send_body(worker: usize, sequence: u64) -> Value {
    json!({
        "phone_number": format!("+1415{:03}{:04}", worker % 1000, sequence % 10_000),
        "template_id": "tmpl_bench",
        "template_name": "bench",
        "parameters": {"name": "Ada", "n": sequence.to_string()},
        "channels": ["sms"],
    })
}

/// The Sent message id a webhook event names: with `--sent-ids`, one of the
/// messages the bench script created, each connection taking every
/// `connections`-th so that ids are not reused before all are used once.
fn sent_message_id(args: &Args, worker: usize, sequence: u64) -> String {
    if args.sent_ids == 0 {
        return format!("bench-{worker}-{sequence}");
    }
    let n = (args.sent_id_offset + (sequence - 1) * args.connections as u64 + worker as u64)
        % args.sent_ids;
    format!("{}{n}", args.sent_id_prefix)
}

fn build_request(
    args: &Args,
    worker: usize,
    sequence: u64,
) -> anyhow::Result<Request<Full<Bytes>>> {
    // The body is serialized once: a webhook's signature covers these exact bytes.
    let (path, body, extra): (&str, Vec<u8>, Vec<(String, String)>) = match args.scenario.as_str() {
        "send" => (
            "/api/messages/send",
            serde_json::to_vec(&send_body(worker, sequence))?,
            vec![],
        ),
        "batch" => (
            "/api/messages/batch",
            serde_json::to_vec(
                &json!({"messages": (0..args.batch_size).map(|i| send_body(worker, sequence * 1000 + i as u64)).collect::<Vec<_>>()}),
            )?,
            vec![],
        ),
        "webhook" => {
            let body = json!({
                "field": "message", "event": "message.delivered",
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "payload": {"message_id": sent_message_id(args, worker, sequence), "message_status": "DELIVERED",
                            "channel": "sms", "outbound_number": "+14155550123",
                            "updated_at": chrono::Utc::now().to_rfc3339()}
            });
            let raw = serde_json::to_vec(&body)?;
            let secret = common::signature::WebhookSecret::parse(&args.webhook_secret)
                .map_err(|e| anyhow::anyhow!("--webhook-secret: {e}"))?;
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let endpoint = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";
            let signature = common::signature::sign(&secret, endpoint, &timestamp, &raw);
            (
                "/webhooks/sent",
                raw,
                vec![
                    ("x-webhook-id".into(), endpoint.into()),
                    ("x-webhook-timestamp".into(), timestamp),
                    ("x-webhook-signature".into(), signature),
                    (
                        "x-webhook-event-id".into(),
                        // Random, like the ids sent-sim (and Sent) send: inserted all
                        // over the inbox's unique index, not appended at its end.
                        uuid::Uuid::new_v4().to_string(),
                    ),
                ],
            )
        }
        // Provider events for forwarding (bench/forward.sh). Each carries
        // the moment it was sent, `bench_sent_at_us`, which the receiver
        // (forward_receiver) subtracts from the moment it arrives.
        "stripe" => {
            let now = chrono::Utc::now();
            let id = format!("{}_{worker}_{sequence}", std::process::id());
            let raw = serde_json::to_vec(&json!({
                "id": format!("evt_bench_{id}"), "object": "event", "type": "invoice.paid",
                "api_version": "2024-06-20", "created": now.timestamp(), "livemode": false,
                "data": {"object": {"id": format!("in_bench_{id}"), "object": "invoice", "amount_paid": 1200,
                                    "currency": "eur", "customer": "cus_bench"}},
                "bench_sent_at_us": now.timestamp_micros(),
            }))?;
            let signature =
                common::signature::sign_stripe(&args.webhook_secret, now.timestamp(), &raw);
            (
                "/webhooks/stripe",
                raw,
                vec![("stripe-signature".into(), signature)],
            )
        }
        "telegram" => {
            let now = chrono::Utc::now();
            let update_id =
                args.first_update_id + (sequence - 1) * args.connections as u64 + worker as u64;
            let raw = serde_json::to_vec(&json!({
                "update_id": update_id,
                "message": {"message_id": update_id, "date": now.timestamp(),
                            "chat": {"id": 4242, "type": "private"},
                            "from": {"id": 4242, "is_bot": false, "first_name": "Ada"}, "text": "/start"},
                "bench_sent_at_us": now.timestamp_micros(),
            }))?;
            (
                "/webhooks/telegram",
                raw,
                vec![(
                    "x-telegram-bot-api-secret-token".into(),
                    args.webhook_secret.clone(),
                )],
            )
        }
        other => anyhow::bail!("unknown scenario {other}"),
    };
    let path = args.path.as_deref().unwrap_or(path);
    let mut builder = Request::post(path)
        .header("host", &args.target)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", args.api_key));
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    Ok(builder.body(Full::new(Bytes::from(body)))?)
}
