use clap::{Parser, Subcommand};
use std::time::Duration;

use common::config::{Config, Process};
use common::domain::Role;
use gateway::{app::AppState, cli};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "HTTP gateway in front of the Sent API"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys stored (hashed) in Postgres.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// A client's data.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Delete a client's messages, timelines, status callbacks and their
    /// attempts, the webhook events applied to them, and its idempotency
    /// records, in one transaction (a privacy request); prints how many.
    Purge {
        /// The client: its API key's name.
        name: String,
        /// Count what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once) with its callback signing secret.
    Create {
        name: String,
        /// Own limit for the sending routes, e.g. 1000/minute.
        #[arg(long)]
        rate_limit: Option<String>,
        /// An operator's key: the status page shows it every client's
        /// messages (a tenant key sees its own).
        #[arg(long)]
        admin: bool,
        /// Where replies to this key's messages go, as signed
        /// `message.inbound` callbacks (https in production).
        #[arg(long)]
        inbound_url: Option<String>,
        /// Provider sources this key may read with the pull API
        /// (`GET /api/events`), e.g. `stripe,telegram` (admins read all).
        #[arg(long, value_delimiter = ',')]
        pull: Vec<String>,
    },
    List,
    Revoke {
        name: String,
    },
    /// Print a key's current callback signing secret (API_KEYS keys: derived
    /// from CALLBACK_SIGNING_KEY; managed keys: stored).
    Secret {
        name: String,
    },
    /// Give a managed key a new callback secret; the old one keeps signing
    /// beside it for the transition.
    RotateSecret {
        name: String,
        /// Days the old secret keeps signing (0: stops at once).
        #[arg(long, default_value_t = 7)]
        transition_days: u64,
    },
    /// Set where replies to a managed key's messages go (`--clear`: nowhere;
    /// they stay readable with the pull API). Keys of API_KEYS take
    /// INBOUND_URLS.
    SetInboundUrl {
        name: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        url: Option<String>,
        #[arg(long)]
        clear: bool,
    },
    /// Set the provider sources a managed key may read with the pull API
    /// (`stripe,telegram,sent`; `--clear`: none).
    SetPull {
        name: String,
        #[arg(
            required_unless_present = "clear",
            conflicts_with = "clear",
            value_delimiter = ','
        )]
        sources: Vec<String>,
        #[arg(long)]
        clear: bool,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = match Config::from_env(Process::Gateway) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gateway: {error}");
            std::process::exit(2);
        }
    };
    let _telemetry = common::telemetry::init(&config.log);
    if let Err(error) = run(args, config).await {
        tracing::error!("{error:#}");
        eprintln!("gateway: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args, mut config: Config) -> anyhow::Result<()> {
    let command = args.command.unwrap_or(Command::Serve);
    // `gateway migrate` is the step MIGRATE_ON_START=false waits for.
    config.migrate_on_start |= matches!(command, Command::Migrate);
    let (store, redis) = gateway::connect(&config).await?;
    match command {
        Command::Serve => {
            gateway::auth::refuse_shared_key_names(&config, &store).await?;
            let listener = tokio::net::TcpListener::bind(config.gateway.bind)
                .await
                .map_err(|e| anyhow::anyhow!("GATEWAY_BIND {}: {e}", config.gateway.bind))?;
            tracing::info!(addr = %config.gateway.bind, profile = ?config.profile, "gateway listening");
            let state = AppState::new(config, store, redis).await?;
            gateway::serve(listener, state, common::shutdown::signal()).await;
            Ok(())
        }
        Command::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Command::Keys { command } => match command {
            KeysCommand::Create {
                name,
                rate_limit,
                admin,
                inbound_url,
                pull,
            } => {
                let role = if admin { Role::Admin } else { Role::Tenant };
                let grants = cli::KeyGrants { inbound_url, pull };
                cli::create(&store, &config, &name, rate_limit, role, grants).await
            }
            KeysCommand::SetPull {
                name,
                sources,
                clear: _,
            } => cli::set_pull(&store, &config, &name, &sources).await,
            KeysCommand::SetInboundUrl {
                name,
                url,
                clear: _,
            } => cli::set_inbound_url(&store, &config, &name, url.as_deref()).await,
            KeysCommand::List => cli::list(&store).await,
            KeysCommand::Revoke { name } => cli::revoke(&store, &name).await,
            KeysCommand::Secret { name } => cli::secret(&store, &config, &name).await,
            KeysCommand::RotateSecret {
                name,
                transition_days,
            } => {
                let transition = Duration::from_secs(transition_days.saturating_mul(86_400));
                cli::rotate_secret(&store, &config, &name, transition).await
            }
        },
        Command::Tenants {
            command: TenantsCommand::Purge { name, dry_run },
        } => cli::purge_tenant(&store, &config, &name, dry_run)
            .await
            .map(|_| ()),
    }
}
