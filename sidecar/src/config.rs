//! Command line and environment configuration (`TOLLGATE_*`, each also a `--flag`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Tollgate's sidecar: cross-node rate limits for the Tollgate filter, health probes and
/// Prometheus metrics. `strict` rules ask it per request (POST /v1/check, exact); `global`
/// rules send what each node admitted in batches (POST /v1/sync), added into the same buckets
/// exactly once per batch and answered with the global totals and the number of live nodes.
///
/// Counters are kept in Redis when TOLLGATE_REDIS_URL is set (any number of sidecars share
/// them), else in this process (one sidecar for all nodes). Usage batches (POST /v1/usage) are
/// aggregated in the same place and flushed into the usage database every
/// TOLLGATE_FLUSH_INTERVAL, exactly once. The usage database's migrations run on `migrate` and
/// before `serve` listens. The admin API and Stripe reporting come next: their settings are
/// accepted now so deployments can be written once, but they are not used yet.
#[derive(Parser)]
#[command(name = "tollgate-sidecar", version)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// The sidecar's subcommands.
#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve the HTTP API until SIGINT or SIGTERM (the default). Applies the usage database's
    /// pending migrations first, and exits with an error (status 1) when the database cannot
    /// be reached or migrated.
    Serve,
    /// Apply the usage database's pending migrations, then exit: status 0 once it is up to
    /// date, 1 with a one-line reason when it cannot be reached or migrated.
    Migrate,
    /// Flush the usage aggregates in Redis into the usage database once, now, then exit:
    /// status 0 when done (also when there was nothing to flush), 1 with a one-line reason
    /// otherwise. Safe at any time, also while sidecars serve and flush on their own. Without
    /// TOLLGATE_REDIS_URL usage lives in each serving sidecar, which flushes it itself.
    Flush,
}

/// Every setting, from `--flags` or the environment.
#[derive(Args)]
pub struct Settings {
    /// The address the HTTP API listens on (port 0: any free port, logged at start).
    #[arg(
        long,
        env = "TOLLGATE_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Redis for counters shared by several sidecars (`redis://[user:password@]host[:port][/db]`);
    /// unset: counters in this process. Reconnects by itself; /readyz answers 503 while Redis
    /// does not. Logged without its password.
    #[arg(
        long,
        env = "TOLLGATE_REDIS_URL",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: Option<String>,

    /// TOLLGATE_REDIS_URL names a Redis Cluster: one or more comma-separated seed nodes
    /// (`redis://host:7000,redis://host:7001`; one is enough, the others are found). MOVED/ASK
    /// redirections and node reconnections are handled; each bucket is one hash-tagged key.
    #[arg(long, env = "TOLLGATE_REDIS_CLUSTER", global = true)]
    pub redis_cluster: bool,

    /// The usage database: `postgres://user[:password]@host[:port]/database` (PostgreSQL) or
    /// `sqlite://path` (a SQLite file, created if missing). Unset: `sqlite://tollgate.db?mode=rwc`,
    /// the file `tollgate.db` in the working directory. Migrated on `migrate` and when `serve`
    /// starts; `serve` exits with an error if it cannot connect. Logged without its password.
    #[arg(
        long,
        env = "TOLLGATE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,

    /// How often `serve` flushes the usage aggregates into the database (`90s`, `5m`, `1h`);
    /// also once more on shutdown.
    #[arg(long, env = "TOLLGATE_FLUSH_INTERVAL", default_value = "5m", value_parser = parse_duration, global = true)]
    pub flush_interval: Duration,

    /// Bearer token for the admin API: today the usage API (`GET /v1/usage/…`) for any
    /// tenant (`?tenant=<id>`); the rest of the admin API comes next. Never logged.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,

    /// The filter configuration JSON the proxy uses (a file path): its `tenants` map (API key
    /// → tenant and plan) authenticates the usage API (`Authorization: Bearer <API key>` reads
    /// that tenant's usage). Checked like the filter checks it; a bad file stops `serve`. Only
    /// SHA-256 hashes of the keys are kept. Unset: the usage API serves the admin token only.
    #[arg(long, env = "TOLLGATE_FILTER_CONFIG", global = true)]
    pub filter_config: Option<std::path::PathBuf>,

    /// Stripe secret key for usage reporting. Not used yet: billing comes next.
    #[arg(
        long,
        env = "TOLLGATE_STRIPE_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub stripe_api_key: Option<String>,

    /// Stripe API base URL (tests point it at a stand-in). Not used yet: billing comes next.
    #[arg(
        long,
        env = "TOLLGATE_STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,

    /// The most active buckets the in-process counter store holds; beyond it new buckets get
    /// 503 `store_full` (idle buckets are forgotten and never count). Not used with Redis.
    #[arg(
        long,
        env = "TOLLGATE_MAX_BUCKETS",
        default_value_t = 1_000_000,
        global = true
    )]
    pub max_buckets: usize,

    /// Write the detailed request log: the per-request entries the filter sends when its
    /// `usage.request_log` is on go into the usage database's `api_request_log` (PostgreSQL:
    /// partitioned by day, written with COPY; SQLite: one table), asynchronously and in
    /// batches, never delaying `POST /v1/usage`. Off (the default): entries are not written,
    /// only counted in `tollgate_request_log_entries_total{outcome="disabled"}`.
    /// (`on`/`true`/`yes`/`1` or `off`/`false`/`no`/`0`.)
    #[arg(long, env = "TOLLGATE_REQUEST_LOG", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub request_log: bool,

    /// Days of the request log kept before today (UTC); older days are dropped (PostgreSQL:
    /// their partitions; SQLite: their rows), checked at start and when the day changes.
    #[arg(long, env = "TOLLGATE_REQUEST_LOG_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3660), global = true)]
    pub request_log_retention_days: u32,

    /// The most request log entries written at once (one COPY, or one SQLite transaction).
    #[arg(long, env = "TOLLGATE_REQUEST_LOG_BATCH", default_value_t = 1_000,
          value_parser = positive, global = true)]
    pub request_log_batch: usize,

    /// Queued request log entries are written at least this often (`500ms`, `1s`, `10s`),
    /// sooner when a full batch waits.
    #[arg(long, env = "TOLLGATE_REQUEST_LOG_FLUSH_INTERVAL", default_value = "1s",
          value_parser = parse_duration, global = true)]
    pub request_log_flush_interval: Duration,

    /// The most request log entries waiting to be written; beyond it new entries are dropped
    /// (counted in `tollgate_request_log_entries_total{outcome="dropped"}` and logged).
    #[arg(long, env = "TOLLGATE_REQUEST_LOG_QUEUE", default_value_t = 100_000,
          value_parser = positive, global = true)]
    pub request_log_queue: usize,
}

impl Settings {
    /// The request log's settings.
    pub fn request_log(&self) -> crate::services::request_log::RequestLogSettings {
        crate::services::request_log::RequestLogSettings {
            enabled: self.request_log,
            retention_days: self.request_log_retention_days,
            batch_entries: self.request_log_batch,
            flush_interval: self.request_log_flush_interval,
            queue_entries: self.request_log_queue,
        }
    }
}

/// Parses a positive integer.
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{text:?} is not a positive integer")),
        Ok(n) => Ok(n),
    }
}

/// Parses a positive duration: an integer and a unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3_600),
        "d" => Duration::from_secs(86_400),
        _ => {
            return Err(format!(
                "{text:?} is not a duration (use 500ms, 90s, 5m, 1h or 1d)"
            ));
        }
    };
    let number: u32 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (use 500ms, 90s, 5m, 1h or 1d)"))?;
    if number == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    scale
        .checked_mul(number)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "5", "m", "0s", "1.5m", "-1s", "5 m", "99999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_flags_and_subcommand() {
        let cli = Cli::try_parse_from(["tollgate-sidecar"]).unwrap();
        assert_eq!(cli.command, None);
        assert_eq!(cli.settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.settings.flush_interval, Duration::from_secs(300));
        let cli =
            Cli::try_parse_from(["tollgate-sidecar", "serve", "--listen", "0.0.0.0:9"]).unwrap();
        assert_eq!(cli.command, Some(Command::Serve));
        assert_eq!(cli.settings.listen.port(), 9);
        assert!(Cli::try_parse_from(["tollgate-sidecar", "--flush-interval", "5x"]).is_err());
        let cli = Cli::try_parse_from([
            "tollgate-sidecar",
            "migrate",
            "--database-url",
            "sqlite://x.db",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Migrate));
        assert_eq!(cli.settings.database_url.as_deref(), Some("sqlite://x.db"));
    }

    #[test]
    fn the_request_log_is_off_by_default() {
        let cli = Cli::try_parse_from(["tollgate-sidecar"]).unwrap();
        assert_eq!(
            cli.settings.request_log(),
            crate::services::request_log::RequestLogSettings::default()
        );
        let cli = Cli::try_parse_from([
            "tollgate-sidecar",
            "--request-log",
            "--request-log-retention-days",
            "7",
            "--request-log-batch",
            "50",
            "--request-log-flush-interval",
            "250ms",
            "--request-log-queue",
            "500",
        ])
        .unwrap();
        let settings = cli.settings.request_log();
        assert!(settings.enabled);
        assert_eq!(settings.retention_days, 7);
        assert_eq!(settings.batch_entries, 50);
        assert_eq!(settings.flush_interval, Duration::from_millis(250));
        assert_eq!(settings.queue_entries, 500);
        for bad in [
            ["--request-log-retention-days", "0"],
            ["--request-log-batch", "0"],
            ["--request-log-queue", "-1"],
            ["--request-log-flush-interval", "1"],
        ] {
            let args = ["tollgate-sidecar", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
