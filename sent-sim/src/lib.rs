//! `sent-sim`: a local stand-in for Sent's v3 messaging API (SENT_API.md),
//! for integration tests (in process, see [`spawn`]), benchmarks and the
//! demo stack (the `sent-sim` binary). It validates and accepts sends like
//! Sent, runs each message through its lifecycle, POSTs signed webhooks,
//! and can inject faults. See the README for env vars and magic inputs.

mod api;
mod config;
mod faults;
mod lifecycle;
mod record;
mod server;
mod signature;
pub use signature::SigningKey;
mod stats;
mod store;
mod util;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use config::{DEFAULT_API_KEY, DEV_WEBHOOK_SECRET, RECORD_DIR_VAR, SimConfig, WebhookEnvelope};
pub use faults::Faults;
pub use stats::{FaultStats, Stats};

use faults::FaultState;
use record::Recorder;
use stats::Counters;
use store::{IdempotencyCache, MessageStore, RateLimiter};
use webhook::Webhooks;

/// One API key and the account it stands for.
#[derive(Debug)]
struct Account {
    api_key: String,
    account_id: Arc<str>,
}

/// Shared state of a running simulator.
#[derive(Debug)]
struct Sim {
    config: SimConfig,
    auto_channel: &'static str,
    accounts: Vec<Account>,
    store: MessageStore,
    idempotency: IdempotencyCache,
    limiter: RateLimiter,
    counters: Counters,
    faults: FaultState,
    webhooks: Webhooks,
    recorder: Option<Recorder>,
    cancel: CancellationToken,
}

impl Sim {
    fn new(config: SimConfig) -> anyhow::Result<Sim> {
        anyhow::ensure!(
            !config.api_keys.is_empty(),
            "at least one API key is needed"
        );
        let auto_channel = match config.auto_channel.as_str() {
            "sms" => "sms",
            "whatsapp" => "whatsapp",
            "rcs" => "rcs",
            "mms" => "mms",
            other => anyhow::bail!("auto channel must be sms, whatsapp, rcs or mms, got {other:?}"),
        };
        let accounts = config
            .api_keys
            .iter()
            .map(|key| Account {
                api_key: key.clone(),
                account_id: Uuid::new_v4().to_string().into(),
            })
            .collect::<Vec<_>>();
        Ok(Sim {
            auto_channel,
            store: MessageStore::new(),
            idempotency: IdempotencyCache::new(config.idempotency_ttl),
            limiter: RateLimiter::new(config.messages_per_minute, accounts.len()),
            accounts,
            counters: Counters::default(),
            faults: FaultState::new(config.faults),
            webhooks: Webhooks::new(&config)?,
            recorder: config.record.clone().map(Recorder::new),
            cancel: CancellationToken::new(),
            config,
        })
    }
}

/// A running simulator. Dropping it stops the server too; [`SimHandle::shutdown`]
/// also waits for in-flight requests.
#[derive(Debug)]
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    sim: Arc<Sim>,
    server: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:port`: the value for `SENT_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters, as `GET /_sim/stats` serves them.
    pub fn stats(&self) -> Stats {
        self.sim.counters.snapshot()
    }

    /// The faults in effect.
    pub fn faults(&self) -> Faults {
        self.sim.faults.get()
    }

    /// Replaces the faults in effect (shares are clamped into 0.0..=1.0).
    pub fn set_faults(&self, faults: Faults) {
        self.sim.faults.set(faults);
    }

    /// Sets or clears the webhook endpoint; applies to the next delivery attempt.
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.sim.webhooks.set_url(url);
    }

    /// The `x-webhook-id` every delivery carries.
    pub fn webhook_id(&self) -> &str {
        &self.sim.webhooks.endpoint_id
    }

    /// The file `/v3` exchanges are recorded to, if any (`SimConfig::record`).
    pub fn record_path(&self) -> Option<&std::path::Path> {
        self.sim.recorder.as_ref().map(Recorder::path)
    }

    /// Messages currently held in memory.
    pub fn message_count(&self) -> usize {
        self.sim.store.len()
    }

    /// Stops accepting, lets in-flight requests finish, and stops lifecycles and retries.
    pub async fn shutdown(mut self) {
        self.sim.cancel.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.sim.cancel.cancel();
    }
}

/// Starts the simulator on `listener` (bind `127.0.0.1:0` in tests).
pub async fn spawn(config: SimConfig, listener: TcpListener) -> anyhow::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config)?);
    let server = tokio::spawn(server::serve(
        listener,
        api::router(Arc::clone(&sim)),
        sim.cancel.clone(),
    ));
    tokio::spawn(housekeeping(Arc::clone(&sim)));
    Ok(SimHandle {
        addr,
        sim,
        server: Some(server),
    })
}

/// Frees expired idempotent answers and forgets old finished messages.
async fn housekeeping(sim: Arc<Sim>) {
    let period = Duration::from_secs(30);
    while util::sleep_or_cancel(period, &sim.cancel).await {
        sim.idempotency.sweep();
        let removed = sim.store.prune(sim.config.message_retention);
        if removed > 0 {
            tracing::debug!(removed, "pruned finished messages");
        }
    }
}
