//! `suite`: the whole stack as separate processes (sent-sim, gateway, two
//! workers, Postgres, Redis) under mixed traffic, to show what it withstands.
//!
//!   suite faults [--short] [--only NAME...]   one run per fault, with counts
//!   suite load [--rate N] [--seconds S]       sustained load, then a ramp
//!   suite wal [--messages N] [--bin DIR...]   Postgres WAL bytes per message
//!
//! Both exit non-zero when a promise breaks: an accepted message lost, sent
//! twice at Sent, or left without a final status. The binaries started are
//! the ones next to this one (same build profile).

mod faults;
mod ledger;
mod load;
mod report;
mod stack;
mod statements;
mod traffic;
mod wal;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    /// Where each run's logs go.
    #[arg(long, default_value = "bench/results/suite")]
    results: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One run per fault (all of them unless `--only`).
    Faults {
        /// The CI version: fewer operations, shorter runs.
        #[arg(long)]
        short: bool,
        /// Fault names to run (see `--list`).
        #[arg(long)]
        only: Vec<String>,
        #[arg(long)]
        list: bool,
    },
    /// Sustained mixed load, then a ramp to saturation.
    Load {
        /// Operations per second while sustained (about 1.05 messages each).
        #[arg(long, default_value_t = 150.0)]
        rate: f64,
        #[arg(long, default_value_t = 180)]
        seconds: u64,
        /// Seconds per ramp step.
        #[arg(long, default_value_t = 15)]
        step_seconds: u64,
        #[arg(long, default_value_t = 10)]
        max_steps: usize,
        /// Directory of another build's gateway, worker and sent-sim.
        #[arg(long)]
        bin: Option<PathBuf>,
        /// On a Postgres cluster of the run's own, and print the statements
        /// that cost it most (`pg_stat_statements`, planning included).
        /// SUITE_PG_OPTIONS adds server options, e.g. `-c autovacuum=off`
        /// as the machine's Postgres runs.
        #[arg(long)]
        private_postgres: bool,
    },
    /// WAL bytes Postgres writes over the whole life of a message.
    Wal {
        #[arg(long, default_value_t = 5000)]
        messages: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Directories of builds to compare (gateway, worker, sent-sim);
        /// none: the binaries next to this one. Each round runs every build
        /// once, in turn.
        #[arg(long)]
        bin: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ok = match args.command {
        Command::Faults { short, only, list } => {
            if list {
                for fault in faults::Fault::ALL {
                    println!("{:<24} {}", fault.name(), fault.describe());
                }
                return Ok(());
            }
            run_faults(short, &only, &args.results).await?
        }
        Command::Load {
            rate,
            seconds,
            step_seconds,
            max_steps,
            bin,
            private_postgres,
        } => {
            let plan = load::Plan {
                rate,
                duration: Duration::from_secs(seconds),
                step: Duration::from_secs(step_seconds),
                max_steps,
                settle_timeout: Duration::from_secs(300),
                bin,
                private_postgres,
            };
            let report = load::run(plan, &args.results).await?;
            report::load(&report);
            let broken = report.ledger.broken_promises();
            if !broken.is_empty() {
                println!("\nFAILED: {}", broken.join("; "));
            }
            broken.is_empty()
        }
        Command::Wal {
            messages,
            concurrency,
            bin,
            rounds,
        } => {
            let builds: Vec<Option<PathBuf>> = if bin.is_empty() {
                vec![None]
            } else {
                bin.into_iter().map(Some).collect()
            };
            let mut reports = Vec::new();
            for round in 1..=rounds {
                for build in &builds {
                    let plan = wal::Plan {
                        messages,
                        concurrency,
                        bin: build.clone(),
                    };
                    let report = wal::run(plan, &args.results).await?;
                    println!("\n== round {round}");
                    report::wal(&report);
                    report::statements(&report.statements);
                    reports.push(report);
                }
            }
            report::wal_summary(&reports);
            true
        }
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn run_faults(
    short: bool,
    only: &[String],
    results: &std::path::Path,
) -> anyhow::Result<bool> {
    let load = if short {
        faults::Load {
            rate: 40.0,
            duration: Duration::from_secs(12),
            settle_timeout: Duration::from_secs(90),
        }
    } else {
        faults::Load {
            rate: 100.0,
            duration: Duration::from_secs(45),
            settle_timeout: Duration::from_secs(180),
        }
    };
    let chosen: Vec<faults::Fault> = faults::Fault::ALL
        .into_iter()
        .filter(|fault| only.is_empty() || only.iter().any(|name| name == fault.name()))
        .collect();
    anyhow::ensure!(
        !chosen.is_empty(),
        "no fault named {only:?} (see `suite faults --list`)"
    );
    println!(
        "{} fault runs: {:.0} operations/s of mixed traffic for {} s each, fault in the middle third",
        chosen.len(),
        load.rate,
        load.duration.as_secs()
    );
    let mut reports = Vec::new();
    for fault in chosen {
        println!("\n== {}: {}", fault.name(), fault.describe());
        let report = faults::run(fault, load, results).await?;
        for note in &report.notes {
            println!("  {note}");
        }
        report::ops_table(&report.ops, load.duration.as_secs_f64());
        report::ledger(&report.ledger);
        reports.push(report);
    }
    report::faults_summary(&reports);
    Ok(reports.iter().all(|r| r.broken_promises().is_empty()))
}
