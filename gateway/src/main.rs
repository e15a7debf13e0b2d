use clap::{Parser, Subcommand};
use common::config::{Config, Process};
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
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once) with its callback signing secret.
    Create {
        name: String,
        /// Own limit for the sending routes, e.g. 1000/minute.
        #[arg(long)]
        rate_limit: Option<String>,
    },
    List,
    Revoke {
        name: String,
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

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let (store, redis) = gateway::connect(&config).await?;
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
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
            KeysCommand::Create { name, rate_limit } => {
                cli::create(&store, &name, rate_limit).await
            }
            KeysCommand::List => cli::list(&store).await,
            KeysCommand::Revoke { name } => cli::revoke(&store, &name).await,
        },
    }
}
