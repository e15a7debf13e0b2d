//! Prometheus metrics. Every process installs one recorder and serves
//! `render()` as `GET /metrics`; the names are listed here so dashboards and
//! code agree on them.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "gateway_http_requests_total";
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
pub const MESSAGES_ACCEPTED: &str = "gateway_messages_accepted_total";
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
pub const WEBHOOKS: &str = "gateway_webhooks_total";
pub const JOBS: &str = "worker_jobs_total";
pub const SENT_REQUESTS: &str = "worker_sent_requests_total";
/// 2xx answers from Sent from which no message id could be read.
pub const SENT_UNREADABLE_ANSWERS: &str = "worker_sent_unreadable_answers_total";
/// Status polls of Sent (`GET /v3/messages/{id}`), by outcome.
pub const SENT_STATUS_POLLS: &str = "worker_sent_status_polls_total";
pub const SENT_DURATION: &str = "worker_sent_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "worker_queue_depth";
pub const QUEUE_OLDEST_AGE: &str = "worker_queue_oldest_job_age_seconds";
pub const INBOX_BACKLOG: &str = "worker_inbox_backlog";
pub const INBOX_EVENTS: &str = "worker_inbox_events_total";
pub const CALLBACKS: &str = "worker_callbacks_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let latency = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Tests run several apps in one process; the first recorder serves all.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    install().render()
}
