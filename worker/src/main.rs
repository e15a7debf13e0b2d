use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::config::{Config, Process};
use common::domain::MessageId;
use common::queue::SendQueue;
use tokio_util::sync::CancellationToken;
use worker::redrive::{Selection, redrive};

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "Sends queued messages to Sent, processes webhooks and callbacks"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM or SIGINT (the default).
    Run,
    /// Put dead-lettered messages back on the queue.
    Redrive {
        /// Every dead-lettered message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Ids of the messages to re-drive.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Also re-drive messages first attempted too long ago for Sent to
        /// still recognise their Idempotency-Key (they could be sent twice).
        #[arg(long)]
        force: bool,
    },
    /// Put parked webhook events back in the inbox to be processed again.
    InboxRedrive {
        /// Every parked event.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Inbox ids (`webhook_inbox.id`) of the events to re-drive.
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
    },
    /// Put dead-lettered forwards (Stripe and Telegram events that exhausted
    /// their attempts, or were refused) back to be delivered again.
    RedriveForwards {
        /// Every dead forward.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Ids (`webhook_forwards.id`) of the forwards to re-drive.
        #[arg(required_unless_present = "all")]
        ids: Vec<i64>,
    },
}

// Why not glibc's malloc: the workspace's Cargo.toml, at `mimalloc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = Config::from_env(Process::Worker).unwrap_or_else(|error| config_error(error));
    let sends = matches!(args.command, None | Some(Command::Run));
    if let (true, Err(error)) = (sends, config.require_sent_api_key()) {
        config_error(error);
    }
    let telemetry = common::telemetry::init(&config.log);
    let result = run(args, Arc::new(config)).await;
    drop(telemetry); // flushes pending spans
    if let Err(error) = result {
        tracing::error!("{error:#}");
        eprintln!("worker: {error:#}");
        std::process::exit(1);
    }
}

/// A setting is missing or wrong: say which, and exit 2.
fn config_error(error: common::config::ConfigError) -> ! {
    eprintln!("worker: {error}");
    std::process::exit(2);
}

async fn run(args: Args, config: Arc<Config>) -> anyhow::Result<()> {
    match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            let (store, redis) = common::startup::connect(&config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            worker::run_worker(config, store, redis, shutdown).await
        }
        Command::Redrive { all, ids, force } => {
            let selection = if all {
                Selection::All
            } else {
                let ids = ids
                    .iter()
                    .map(|id| {
                        id.parse::<MessageId>()
                            .map_err(|_| anyhow::anyhow!("{id:?} is not a message id"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Selection::Ids(ids)
            };
            let (store, redis) = common::startup::connect(&config).await?;
            let queue = SendQueue::new(redis, &config.redis_prefix, config.sharding);
            let redriven = redrive(
                &store,
                &queue,
                &selection,
                config.worker.redrive_safe_window(&config.sent),
                force,
            )
            .await?;
            println!("re-drove {} message(s)", redriven.ids.len());
            for id in &redriven.ids {
                println!("{id}");
            }
            if !redriven.refused.is_empty() {
                eprintln!(
                    "refused {} message(s) first attempted more than {}h ago: Sent forgets an \
                     Idempotency-Key after 24 hours, so if an earlier attempt reached Sent, sending \
                     again could deliver twice. Check them at Sent, then re-drive with --force:",
                    redriven.refused.len(),
                    config.worker.redrive_safe_window(&config.sent).as_secs() / 3600
                );
                for id in &redriven.refused {
                    eprintln!("{id}");
                }
                std::process::exit(3);
            }
            Ok(())
        }
        Command::InboxRedrive { all, ids } => {
            let (store, _) = common::startup::connect(&config).await?;
            let redriven = store
                .redrive_inbox((!all).then_some(ids.as_slice()))
                .await?;
            println!("re-drove {} webhook event(s)", redriven.len());
            for id in redriven {
                println!("{id}");
            }
            Ok(())
        }
        Command::RedriveForwards { all, ids } => {
            let (store, _) = common::startup::connect(&config).await?;
            let redriven = store
                .redrive_forwards((!all).then_some(ids.as_slice()))
                .await?;
            println!("re-drove {} forward(s)", redriven.len());
            for id in redriven {
                println!("{id}");
            }
            Ok(())
        }
    }
}

/// First SIGTERM or SIGINT: stop and drain. A second one: exit at once.
async fn on_signal(shutdown: CancellationToken) {
    common::shutdown::signal().await;
    tracing::info!("shutdown signal received; finishing in-flight work");
    shutdown.cancel();
    common::shutdown::signal().await;
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(130);
}
