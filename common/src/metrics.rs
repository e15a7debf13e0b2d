//! Prometheus metrics. Every process installs one recorder and serves
//! `render()` as `GET /metrics`; the names are listed here so dashboards,
//! alert rules (`deploy/prometheus/alerts.yml`) and code agree on them, and
//! each is described (HELP, TYPE, unit) once, in `describe()`.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
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
/// Forwarding of Stripe and Telegram events to the operator's services
/// (issue 15), by source and destination.
pub const FORWARDS_RECEIVED: &str = "worker_forwards_received_total";
pub const REPLIES: &str = "worker_replies_total";
pub const FORWARD_ATTEMPTS: &str = "worker_forward_attempts_total";
pub const FORWARDS_UNDELIVERED: &str = "worker_forwards_undelivered";
pub const FORWARDS_OLDEST_UNDELIVERED: &str = "worker_forwards_oldest_undelivered_age_seconds";
/// The process's Postgres pool, `{state="in_use|idle|max"}`; the read
/// replica's pool (`DATABASE_READ_URL`) also has `pool="replica"`.
/// Timeline events the dashboard's rollups have not folded in yet.
pub const DASHBOARD_ROLLUP_BEHIND: &str = "worker_dashboard_rollup_behind_events";
pub const GATEWAY_POSTGRES_POOL: &str = "gateway_postgres_pool_connections";
pub const WORKER_POSTGRES_POOL: &str = "worker_postgres_pool_connections";
/// The Redis server's clients as it counts them, `{state="connected|blocked|max"}`.
pub const REDIS_CLIENTS: &str = "worker_redis_clients";

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
        describe();
        handle
    })
}

/// HELP and TYPE of every metric either process records. A description is
/// only rendered once its metric has a value, so the gateway does not show
/// the worker's metrics and the other way round.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered by the gateway (count), by route template, method and status code."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time the gateway took to answer an HTTP request, in seconds, by route template and method."
    );
    describe_counter!(
        MESSAGES_ACCEPTED,
        Unit::Count,
        "Messages accepted by the gateway and queued for sending (count of messages, a batch counts each)."
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Requests the gateway answered 429 because a rate limit was reached (count), by limit class."
    );
    describe_counter!(
        WEBHOOKS,
        Unit::Count,
        "Webhook deliveries received (count), by provider and outcome (stored, duplicate, rejected) with the rejection reason."
    );
    describe_counter!(
        JOBS,
        Unit::Count,
        "Send jobs processed by the worker (count), by outcome (accepted, retrying, failed, dead_lettered, skipped, deferred, error)."
    );
    describe_counter!(
        SENT_REQUESTS,
        Unit::Count,
        "Send requests made to Sent (count), by outcome (accepted, retry, permanent) and Sent's error code (e.g. HTTP_503, SERVICE_001, AUTH_001; empty when accepted)."
    );
    describe_counter!(
        SENT_UNREADABLE_ANSWERS,
        Unit::Count,
        "2xx answers from Sent from which no message id could be read (count of answers)."
    );
    describe_counter!(
        SENT_STATUS_POLLS,
        Unit::Count,
        "Status polls of Sent, GET /v3/messages/{id} (count), by outcome (changed, unchanged, stale, failed)."
    );
    describe_histogram!(
        SENT_DURATION,
        Unit::Seconds,
        "Time a send request to Sent took, from the request to its classified answer, in seconds."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Jobs in the send queue (count of jobs, fleet-wide), by state (ready, scheduled)."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest send job that is due and not yet taken, in seconds (0 when none)."
    );
    describe_gauge!(
        INBOX_BACKLOG,
        Unit::Count,
        "Rows waiting to be processed (count, fleet-wide), by kind: webhooks (inbox events) and callbacks (status callbacks not yet delivered)."
    );
    describe_counter!(
        INBOX_EVENTS,
        Unit::Count,
        "Inbox events (received webhooks) processed by the worker (count), by outcome."
    );
    describe_counter!(
        CALLBACKS,
        Unit::Count,
        "Status callback attempts to clients (count of attempts), by client (API key name) and outcome (delivered, retrying, given_up, refused: the callback_url reaches no allowed address, not retried)."
    );
    describe_counter!(
        REPLIES,
        Unit::Count,
        "Replies from contacts (Sent's message.received) the worker routed (count of events), by outcome: routed (to the tenant that last wrote to the number within REPLY_WINDOW_DAYS) or unroutable (kept for admins)."
    );
    describe_counter!(
        FORWARDS_RECEIVED,
        Unit::Count,
        "Verified provider events queued for forwarding to an operator's service (count of events), by source (stripe, telegram) and destination."
    );
    describe_counter!(
        FORWARD_ATTEMPTS,
        Unit::Count,
        "Attempts to forward a provider event (count of attempts), by source, destination and outcome (delivered, retrying, dead: attempts exhausted, refused: the URL reaches no allowed address)."
    );
    describe_gauge!(
        FORWARDS_UNDELIVERED,
        Unit::Count,
        "Forwards not delivered (count, fleet-wide), by source, destination and state: pending (all waiting), failing (pending whose last attempt failed), dead (dead-lettered, re-drivable)."
    );
    describe_gauge!(
        FORWARDS_OLDEST_UNDELIVERED,
        Unit::Seconds,
        "Age of the oldest pending forward, in seconds (fleet-wide, 0 when none), by source and destination."
    );
    describe_gauge!(
        DASHBOARD_ROLLUP_BEHIND,
        Unit::Count,
        "Timeline events (message_events) not yet folded into the dashboard's rollups (count, fleet-wide), as of this worker's last rollup step; the status page and the dashboard views add them up on every read, so this is their extra work. Grows only while no worker runs the rollup step."
    );
    describe_gauge!(
        GATEWAY_POSTGRES_POOL,
        Unit::Count,
        "Connections of this gateway's Postgres pool (count), by state: in_use, idle, and max (the configured maximum); pool=\"replica\" for its read replica's pool (DATABASE_READ_URL)."
    );
    describe_gauge!(
        WORKER_POSTGRES_POOL,
        Unit::Count,
        "Connections of this worker's Postgres pool (count), by state: in_use, idle, and max (the configured maximum)."
    );
    describe_gauge!(
        REDIS_CLIENTS,
        Unit::Count,
        "Client connections of the Redis server as it reports them (count, all processes), by state: connected, blocked, and max (its maxclients)."
    );
}

/// Sets `name{state="in_use|idle|max"}` from a Postgres pool.
pub fn record_pool(name: &'static str, pool: &sqlx::PgPool) {
    for (state, value) in pool_states(pool) {
        metrics::gauge!(name, "state" => state).set(value);
    }
}

/// Sets `name{pool="replica",state="in_use|idle|max"}` from the read
/// replica's pool, beside [`record_pool`]'s series of the primary's.
pub fn record_replica_pool(name: &'static str, pool: &sqlx::PgPool) {
    for (state, value) in pool_states(pool) {
        metrics::gauge!(name, "pool" => "replica", "state" => state).set(value);
    }
}

fn pool_states(pool: &sqlx::PgPool) -> [(&'static str, f64); 3] {
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    let max = pool.options().get_max_connections() as f64;
    [
        ("in_use", (size - idle).max(0.0)),
        ("idle", idle),
        ("max", max),
    ]
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    install().render()
}
