//! `tollgate-sidecar`: parse the configuration, connect to the usage database and migrate it,
//! then serve until SIGINT/SIGTERM (or, for `migrate`, stop there; for `flush`, flush the
//! usage aggregates once).

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tollgate_sidecar::commands::{self, RegistryCommand};
use tollgate_sidecar::config::{AlertsCommand, BillingCommand, Cli, Command};
use tollgate_sidecar::server;
use tollgate_sidecar::storage::sql::Database;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Serve);
    match run(command, &cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "tollgate-sidecar failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cli: &Cli) -> Result<(), Box<dyn Error>> {
    let database = Database::open(cli.settings.database_url.as_deref()).await?;
    match command {
        Command::Migrate => {
            database.close().await;
            Ok(())
        }
        Command::Flush => {
            let flushed = server::flush_once(&cli.settings, &database).await;
            database.close().await;
            match flushed? {
                Some(report) => tracing::info!(
                    tenants = report.tenants,
                    applied = report.applied,
                    already_applied = report.already_applied,
                    rows = report.rows,
                    "usage flushed"
                ),
                None => tracing::warn!(
                    "no TOLLGATE_REDIS_URL: usage lives in each serving sidecar, which flushes \
                     it itself; nothing to flush here"
                ),
            }
            Ok(())
        }
        Command::Serve => Ok(server::serve_with_database(&cli.settings, database).await?),
        Command::Plans { action } => registry(RegistryCommand::Plans(action), database).await,
        Command::Tenants { action } => registry(RegistryCommand::Tenants(action), database).await,
        Command::Keys { action } => registry(RegistryCommand::Keys(action), database).await,
        Command::Alerts { action } => alerts(action, &cli.settings, database).await,
        Command::Billing { action } => billing(action, cli, database).await,
    }
}

/// Runs an alerts command and prints its summary (JSON) on stdout.
async fn alerts(
    command: AlertsCommand,
    settings: &tollgate_sidecar::config::Settings,
    database: Database,
) -> Result<(), Box<dyn Error>> {
    let answer = commands::alerts::run(command, settings, database.clone()).await;
    database.close().await;
    let (summary, ok) = answer?;
    println!("{summary:#}");
    if ok {
        Ok(())
    } else {
        Err("an alert delivery failed for good (see deliveries.failed)".into())
    }
}

/// Runs a registry command and prints its answer (JSON) on stdout.
async fn registry(command: RegistryCommand, database: Database) -> Result<(), Box<dyn Error>> {
    let answer = commands::run(command, database.clone()).await;
    database.close().await;
    match answer {
        Ok(answer) => {
            println!("{answer:#}");
            Ok(())
        }
        Err(reason) => Err(reason.into()),
    }
}

/// Runs a billing command: its JSON on stdout, each problem on stderr (then exit status 1).
async fn billing(
    action: BillingCommand,
    cli: &Cli,
    database: Database,
) -> Result<(), Box<dyn Error>> {
    let outcome = commands::billing::run(action, &cli.settings, database.clone()).await;
    database.close().await;
    let outcome = outcome?;
    println!("{:#}", outcome.answer);
    for problem in &outcome.problems {
        eprintln!("billing: {problem}");
    }
    if outcome.problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} billing problem(s), listed above",
            outcome.problems.len()
        )
        .into())
    }
}
