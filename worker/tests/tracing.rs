//! One trace follows a message: the gateway's request, the worker's send
//! attempt (through the job in Redis), the call to Sent, and the status
//! events Sent reports later by webhook. Spans go to an in-test exporter,
//! exactly as they would go to an OTLP collector.

mod send_harness;

use common::config::{LogConfig, LogFormat};
use common::domain::MessageStatus;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use send_harness::{Harness, wait_for};
use serde_json::{Value, json};

const API_KEY: &str = "trace-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_covers_request_queue_worker_and_sent() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let log = LogConfig {
        // Production's level: spans are exported whatever the logs show.
        level: "warn".into(),
        format: LogFormat::Pretty,
        otlp_endpoint: None,
    };
    common::telemetry::install(&log, Some(provider.clone()), "test");

    let mut h = Harness::new().await;
    h.set("API_KEYS", &format!("tracer:{API_KEY}"));
    h.set("SENT_DM_WEBHOOK_SECRET", sent_sim::DEV_WEBHOOK_SECRET);
    h.set("INBOX_POLL_INTERVAL_MS", "100");
    let base = h.serve_gateway().await;
    h.sim.set_webhook_url(Some(format!("{base}/webhooks/sent")));
    let _worker = h.start_worker().await;

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/messages/send"))
        .bearer_auth(API_KEY)
        .json(&json!({"phone_number": "+14155550123", "template_name": "welcome"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(20, "the message to be accepted", || {
        let store = h.store.clone();
        let id = id.clone();
        async move {
            store
                .message("tracer", id.parse().unwrap())
                .await
                .unwrap()
                .is_some_and(|m| m.status == MessageStatus::Delivered)
        }
    })
    .await;
    // The status is visible once the apply commits, a moment before the
    // apply's span ends: wait for the span too.
    wait_for(5, "the delivery's span to end", || {
        let spans = exporter.get_finished_spans().unwrap();
        async move {
            spans.iter().any(|s| {
                s.name == "sent.webhook"
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "status" && kv.value.as_str() == "delivered")
            })
        }
    })
    .await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name}; have {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let request = find("request");
    let send = find("send");
    let sent_call = find("sent.send");
    let trace = request.span_context.trace_id();
    assert_eq!(
        send.span_context.trace_id(),
        trace,
        "the worker continues the request's trace"
    );
    assert_eq!(
        sent_call.span_context.trace_id(),
        trace,
        "the call to Sent is in the same trace"
    );
    assert_eq!(sent_call.parent_span_id, send.span_context.span_id());

    // Sent's webhooks, applied by the worker, join the same trace, next to
    // the send under the request that accepted the message.
    let webhooks: Vec<_> = spans.iter().filter(|s| s.name == "sent.webhook").collect();
    let status = |span: &opentelemetry_sdk::trace::SpanData| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "status")
            .map(|kv| kv.value.to_string())
    };
    assert!(
        webhooks
            .iter()
            .any(|s| status(s).as_deref() == Some("delivered")),
        "a span for the delivery; have {:?}",
        webhooks.iter().map(|s| status(s)).collect::<Vec<_>>()
    );
    for webhook in webhooks {
        assert_eq!(webhook.span_context.trace_id(), trace);
        assert_eq!(webhook.parent_span_id, send.parent_span_id);
    }
}
