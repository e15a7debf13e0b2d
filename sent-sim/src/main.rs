//! The `sent-sim` binary: serves the simulator on `SENT_SIM_BIND` until
//! SIGTERM or SIGINT.

use anyhow::Context;
use sent_sim::SimConfig;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const DEFAULT_BIND: &str = "127.0.0.1:8090";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .filter(|level| !level.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned())
        .to_ascii_lowercase();
    let filter = EnvFilter::try_new(&level).context("invalid value for LOG_LEVEL")?;
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let config = SimConfig::from_env()?;
    let bind = std::env::var("SENT_SIM_BIND")
        .ok()
        .filter(|bind| !bind.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BIND.to_owned());
    let listener = TcpListener::bind(bind.trim())
        .await
        .with_context(|| format!("cannot bind SENT_SIM_BIND={bind}"))?;
    let handle = sent_sim::spawn(config.clone(), listener).await?;
    tracing::info!(
        addr = %handle.addr,
        api_keys = config.api_keys.len(),
        webhook_url = ?config.webhook_url,
        webhook_id = handle.webhook_id(),
        step_delay_ms = config.step_delay.as_millis() as u64,
        faults = ?config.faults,
        "sent-sim listening"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// SIGTERM (from an orchestrator) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
