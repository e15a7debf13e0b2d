//! Open-loop mixed traffic: operations start on a fixed schedule whatever
//! the answers (a slow server does not slow the client down, so latency is
//! not hidden by coordinated omission), each one timed from the moment it
//! was due. Every message the gateway accepts is written down, for the
//! ledger to account for afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::stack::{API_KEY, WEBHOOK_SECRET};

/// The kinds of operation, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Send,
    Batch,
    Read,
    Webhook,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Send, Op::Batch, Op::Read, Op::Webhook];

    pub fn label(self) -> &'static str {
        match self {
            Op::Send => "POST /api/messages/send",
            Op::Batch => "POST /api/messages/batch",
            Op::Read => "GET /api/messages/{id}",
            Op::Webhook => "POST /webhooks/sent",
        }
    }
}

/// Operations per 100: the rest of 100 after send, batch and read are
/// webhooks (signed `message.delivered` events for messages Sent has, on top
/// of the lifecycle webhooks sent-sim posts for every message).
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub send: u32,
    pub batch: u32,
    pub read: u32,
}

impl Mix {
    pub const MIXED: Mix = Mix {
        send: 55,
        batch: 5,
        read: 25,
    };

    fn pick(self, sequence: u64) -> Op {
        // Spread each kind evenly over the schedule (a stride through 0..100).
        let slot = (sequence * 37 % 100) as u32;
        if slot < self.send {
            Op::Send
        } else if slot < self.send + self.batch {
            Op::Batch
        } else if slot < self.send + self.batch + self.read {
            Op::Read
        } else {
            Op::Webhook
        }
    }
}

pub const BATCH_SIZE: usize = 10;
/// Requests in flight at most; an operation due while all are busy is
/// counted as `skipped` (the client could not keep up: saturation).
const MAX_IN_FLIGHT: usize = 512;

/// What happened to each kind of operation.
pub struct OpStats {
    pub latency: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// No HTTP answer (refused, reset, timed out).
    pub transport_errors: u64,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency: Histogram::new(3).expect("3 significant figures is valid"),
            statuses: BTreeMap::new(),
            transport_errors: 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers other than 2xx, and no answer at all.
    pub fn errors(&self) -> u64 {
        self.total() - self.ok()
    }

    /// Answered 5xx or not at all: the client was told to try again later.
    pub fn refused(&self) -> u64 {
        let server_errors: u64 = self.statuses.range(500..).map(|(_, n)| n).sum();
        server_errors + self.transport_errors
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Everything the traffic observed, shared by its tasks.
pub struct Recorder {
    ops: Mutex<BTreeMap<Op, OpStats>>,
    /// Ids of accepted messages (202 from send, `queued` results of batch).
    accepted: Mutex<Vec<String>>,
    /// Messages in requests sent, accepted or not.
    pub submitted: AtomicU64,
    /// Operations due while `MAX_IN_FLIGHT` requests were waiting.
    pub skipped: AtomicU64,
    /// Sent's ids of messages read back, for webhooks to name.
    sent_ids: Mutex<Vec<String>>,
    /// Requests started before `mark` that got no answer.
    pub cut_off_after_mark: AtomicU64,
    in_flight: AtomicU64,
    mark: Mutex<Option<Instant>>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            ops: Mutex::new(Op::ALL.iter().map(|op| (*op, OpStats::new())).collect()),
            accepted: Mutex::new(Vec::new()),
            submitted: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            sent_ids: Mutex::new(Vec::new()),
            cut_off_after_mark: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            mark: Mutex::new(None),
        })
    }

    /// From now on, requests already in flight that get no answer are
    /// counted in `cut_off_after_mark` (a SIGTERM must let them finish).
    /// Returns how many requests are in flight.
    pub fn mark(&self) -> u64 {
        *self.mark.lock().unwrap() = Some(Instant::now());
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    /// Takes the figures gathered so far, leaving empty ones.
    pub fn take_ops(&self) -> BTreeMap<Op, OpStats> {
        let mut ops = self.ops.lock().unwrap();
        std::mem::replace(
            &mut *ops,
            Op::ALL.iter().map(|op| (*op, OpStats::new())).collect(),
        )
    }

    fn record(&self, op: Op, due: Instant, started: Instant, status: Option<u16>) {
        let mut ops = self.ops.lock().unwrap();
        let stats = ops.get_mut(&op).expect("every op has stats");
        match status {
            Some(status) => {
                *stats.statuses.entry(status).or_default() += 1;
                let _ = stats.latency.record(due.elapsed().as_micros() as u64);
            }
            None => {
                stats.transport_errors += 1;
                let mark = *self.mark.lock().unwrap();
                if mark.is_some_and(|mark| started < mark) {
                    self.cut_off_after_mark.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct Traffic {
    http: reqwest::Client,
    base: String,
    recorder: Arc<Recorder>,
    mix: Mix,
}

impl Traffic {
    pub fn new(base: &str, recorder: Arc<Recorder>, mix: Mix) -> Traffic {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()
            .expect("a default client builds");
        Traffic {
            http,
            base: base.to_owned(),
            recorder,
            mix,
        }
    }

    /// `rate` operations per second for `duration`; returns when the last one
    /// has finished.
    pub async fn run(&self, rate: f64, duration: Duration) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let interval = Duration::from_secs_f64(1.0 / rate);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut sequence = 0u64;
        loop {
            let due = started + interval.mul_f64(sequence as f64);
            if due >= started + duration {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            sequence += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.recorder.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let this = self.clone();
            let op = self.mix.pick(sequence);
            tasks.spawn(async move {
                this.one(op, sequence, due).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn one(&self, op: Op, sequence: u64, due: Instant) {
        let has_accepted = !self.recorder.accepted.lock().unwrap().is_empty();
        let has_sent_ids = !self.recorder.sent_ids.lock().unwrap().is_empty();
        // Nothing to read or name yet: send (or read) instead.
        let op = match op {
            Op::Read | Op::Webhook if !has_accepted => Op::Send,
            Op::Webhook if !has_sent_ids => Op::Read,
            op => op,
        };
        let started = Instant::now();
        self.recorder.in_flight.fetch_add(1, Ordering::SeqCst);
        let status = match op {
            Op::Send => self.send(sequence).await,
            Op::Batch => self.batch(sequence).await,
            Op::Read => self.read(sequence).await,
            Op::Webhook => self.webhook(sequence).await,
        };
        self.recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.recorder.record(op, due, started, status);
    }

    /// `n` batch requests at once, on top of the schedule; finished when the
    /// returned tasks are.
    pub fn burst(&self, n: u64) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let this = self.clone();
            // Sequences of their own, far from the schedule's.
            tasks
                .spawn(async move { this.one(Op::Batch, 1_000_000_000 + i, Instant::now()).await });
        }
        tasks
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(API_KEY.as_str())
    }

    async fn send(&self, sequence: u64) -> Option<u16> {
        self.recorder.submitted.fetch_add(1, Ordering::Relaxed);
        let response = self
            .post("/api/messages/send")
            .json(&message(sequence))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        if status == 202
            && let Some(id) = body["message_id"].as_str()
        {
            self.recorder.accepted.lock().unwrap().push(id.to_owned());
        }
        Some(status)
    }

    async fn batch(&self, sequence: u64) -> Option<u16> {
        self.recorder
            .submitted
            .fetch_add(BATCH_SIZE as u64, Ordering::Relaxed);
        let messages: Vec<Value> = (0..BATCH_SIZE as u64)
            .map(|i| message(sequence * 100 + i))
            .collect();
        let response = self
            .post("/api/messages/batch")
            .json(&json!({ "messages": messages }))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        if status == 202 {
            let ids = body["results"].as_array().into_iter().flatten();
            let ids = ids.filter_map(|r| r["message_id"].as_str().map(str::to_owned));
            self.recorder.accepted.lock().unwrap().extend(ids);
        }
        Some(status)
    }

    /// Reads one of the messages accepted recently (the newest thousand).
    async fn read(&self, sequence: u64) -> Option<u16> {
        let id = {
            let accepted = self.recorder.accepted.lock().unwrap();
            let recent = accepted.len().min(1000);
            accepted[accepted.len() - 1 - (sequence as usize % recent)].clone()
        };
        let response = self
            .http
            .get(format!("{}/api/messages/{id}", self.base))
            .bearer_auth(API_KEY.as_str())
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        if let Some(sent_id) = body["provider_message_id"].as_str() {
            let mut sent_ids = self.recorder.sent_ids.lock().unwrap();
            if sent_ids.len() >= 1000 {
                sent_ids.remove(0);
            }
            sent_ids.push(sent_id.to_owned());
        }
        Some(status)
    }

    /// A signed `message.delivered` for a message Sent has, as Sent would
    /// post it (a late or repeated event, as far as the message goes).
    async fn webhook(&self, sequence: u64) -> Option<u16> {
        let sent_id = {
            let sent_ids = self.recorder.sent_ids.lock().unwrap();
            sent_ids[sequence as usize % sent_ids.len()].clone()
        };
        let now = chrono::Utc::now();
        let body = serde_json::to_vec(&json!({
            "field": "message", "event": "message.delivered", "timestamp": now.to_rfc3339(),
            "payload": {"message_id": sent_id, "message_status": "DELIVERED", "channel": "sms",
                        "outbound_number": "+14155550123", "updated_at": now.to_rfc3339()}
        }))
        .expect("JSON serializes");
        let secret = common::signature::WebhookSecret::parse(&WEBHOOK_SECRET)
            .expect("the sim's secret parses");
        let (endpoint, timestamp) = ("suite-endpoint", now.timestamp().to_string());
        let signature = common::signature::sign(&secret, endpoint, &timestamp, &body);
        let response = self
            .http
            .post(format!("{}/webhooks/sent", self.base))
            .header("content-type", "application/json")
            .header("x-webhook-id", endpoint)
            .header("x-webhook-timestamp", timestamp)
            .header("x-webhook-signature", signature)
            .header("x-webhook-event-id", uuid::Uuid::new_v4().to_string())
            .body(body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        response.bytes().await.ok()?;
        Some(status)
    }
}

fn message(sequence: u64) -> Value {
    json!({
        "phone_number": format!("+1415555{:04}", sequence % 10_000),
        "template_id": "tmpl_suite",
        "template_name": "suite",
        "parameters": {"name": "Ada", "n": sequence.to_string()},
        "channels": ["sms"],
    })
}
