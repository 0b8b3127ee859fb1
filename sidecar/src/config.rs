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
/// before `serve` listens. The same database holds the registry (plans, tenants, API keys),
/// written through the admin API (/v1/admin/..., TOLLGATE_ADMIN_TOKEN) or the `plans`,
/// `tenants` and `keys` commands, and followed by the filter (GET /v1/registry). Usage of
/// metered plans is reported to Stripe Billing Meters exactly once, reconciled daily, and the
/// overage of fixed plans invoiced when periods close (`billing …`, TOLLGATE_STRIPE_*).
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
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
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
    /// Plans (the registry): put, get, list. Works on the database directly.
    Plans {
        /// What to do.
        #[command(subcommand)]
        action: crate::commands::PlansCommand,
    },
    /// Tenants (the registry): put (create, change plan, suspend, resume), get, list.
    Tenants {
        /// What to do.
        #[command(subcommand)]
        action: crate::commands::TenantsCommand,
    },
    /// API keys (the registry): create (printed once), list, revoke, rotate.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: crate::commands::KeysCommand,
    },
    /// Quota alerts: `alerts run [--now T]` evaluates and delivers once, then exits.
    Alerts {
        /// What to do.
        #[command(subcommand)]
        action: AlertsCommand,
    },
    /// Stripe billing: `report` (send pending meter events now; exit 1 when any is
    /// dead-lettered or waits), `reconcile`, `close-periods`.
    Billing {
        /// What to do.
        #[command(subcommand)]
        action: BillingCommand,
    },
}

/// `tollgate-sidecar alerts …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum AlertsCommand {
    /// Evaluate the quota alerts once and send what is due, then exit (status 1 when a
    /// delivery failed for good).
    Run {
        /// Evaluate as of this time (RFC 3339, `2026-12-30T00:00:00Z`); default now. Only the
        /// evaluation moves: deliveries are sent and timestamped now.
        #[arg(long)]
        now: Option<String>,
    },
}

/// `tollgate-sidecar billing …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum BillingCommand {
    /// Send every pending meter event now (retrying 429/5xx/timeouts up to
    /// TOLLGATE_BILLING_REPORT_TIMEOUT); exit 1 when any is dead-lettered, waits for a
    /// customer id or meter name, or is still unsent.
    Report,
    /// Compare Stripe's daily event summaries with api_usage_daily for every metered
    /// customer (default: yesterday, UTC); record each result, send a shortfall as a
    /// correction event (once), report an excess (exit 1).
    Reconcile {
        /// The day to reconcile (YYYY-MM-DD, UTC).
        #[arg(long)]
        date: Option<String>,
    },
    /// Invoice the overage of every period that ended before `--now` (RFC 3339, default now):
    /// one invoice with one item per tenant and period, resumed where it stopped.
    ClosePeriods {
        /// The time periods must have ended by.
        #[arg(long)]
        now: Option<String>,
    },
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

    /// Bearer token for the admin API (`/v1/admin/…`: plans, tenants, API keys) and the usage
    /// API (`GET /v1/usage/…`) for any tenant (`?tenant=<id>`). Unset: the admin API answers
    /// 401. Never logged.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,

    /// Node tokens, comma-separated (several are accepted, for rotation): the filter's calls
    /// (`/v1/check`, `/v1/checks`, `/v1/sync`, `/v1/usage`, `/v1/registry`) must carry one
    /// (`Authorization: Bearer <token>`, the filter's `sidecar.token`), else 401. Unset: those
    /// routes are open, which `serve` allows on a loopback address only. Never logged.
    #[arg(
        long,
        env = "TOLLGATE_NODE_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub node_token: Option<String>,

    /// How often the registry's quota states are recomputed (`1s`, `500ms`): how soon a used
    /// up monthly quota reaches the registry feed.
    #[arg(long, env = "TOLLGATE_QUOTA_INTERVAL", default_value = "1s",
          value_parser = parse_duration, global = true)]
    pub quota_interval: Duration,

    /// The filter configuration JSON the proxy uses (a file path): its `tenants` map (API key
    /// → tenant and plan) authenticates the usage API (`Authorization: Bearer <API key>` reads
    /// that tenant's usage). Checked like the filter checks it; a bad file stops `serve`. Only
    /// SHA-256 hashes of the keys are kept. Unset: the usage API serves the admin token only.
    #[arg(long, env = "TOLLGATE_FILTER_CONFIG", global = true)]
    pub filter_config: Option<std::path::PathBuf>,

    /// Stripe secret key (`sk_…`) for meter events and overage invoices, sent as
    /// `Authorization: Bearer` and never logged. Unset: billing waits (nothing is lost).
    #[arg(
        long,
        env = "TOLLGATE_STRIPE_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub stripe_api_key: Option<String>,

    /// Stripe API base URL (tests point it at a stand-in).
    #[arg(
        long,
        env = "TOLLGATE_STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,

    /// The most Stripe calls per second, all customers together (Stripe allows 1,000 in live
    /// mode; each customer and meter gets one call at a time anyway).
    #[arg(long, env = "TOLLGATE_STRIPE_RATE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub stripe_rate: u32,

    /// How long one Stripe call may take before it is abandoned and retried later.
    #[arg(long, env = "TOLLGATE_STRIPE_TIMEOUT", default_value = "10s",
          value_parser = parse_duration, global = true)]
    pub stripe_timeout: Duration,

    /// How often `serve` sends pending meter events (each run sends all that are due).
    #[arg(long, env = "TOLLGATE_BILLING_INTERVAL", default_value = "10s",
          value_parser = parse_duration, global = true)]
    pub billing_interval: Duration,

    /// How often `serve` closes the periods that ended (overage invoices).
    #[arg(long, env = "TOLLGATE_BILLING_CLOSE_INTERVAL", default_value = "5m",
          value_parser = parse_duration, global = true)]
    pub billing_close_interval: Duration,

    /// How often `serve` reconciles yesterday (UTC) with Stripe's event summaries.
    #[arg(long, env = "TOLLGATE_BILLING_RECONCILE_INTERVAL", default_value = "6h",
          value_parser = parse_duration, global = true)]
    pub billing_reconcile_interval: Duration,

    /// How long after the latest meter event of a day was accepted reconciliation trusts
    /// Stripe's summary of that day (they are eventually consistent); before, a shortfall is
    /// `pending`, not corrected.
    #[arg(long, env = "TOLLGATE_BILLING_RECONCILE_SETTLE", default_value = "1h",
          value_parser = parse_duration, global = true)]
    pub billing_reconcile_settle: Duration,

    /// How many customers' meter events are sent at once (each one call at a time).
    #[arg(long, env = "TOLLGATE_BILLING_CONCURRENCY", default_value_t = 32,
          value_parser = positive, global = true)]
    pub billing_concurrency: usize,

    /// How long a sender holds the outbox rows it claimed against other senders (a sender
    /// killed while holding them: they wait this long).
    #[arg(long, env = "TOLLGATE_BILLING_LEASE", default_value = "30s",
          value_parser = parse_duration, global = true)]
    pub billing_lease: Duration,

    /// The first retry's delay after a 429, 5xx or timeout; doubled per attempt (jittered, at
    /// most 10 minutes, at least Stripe's Retry-After).
    #[arg(long, env = "TOLLGATE_BILLING_RETRY_BASE", default_value = "1s",
          value_parser = parse_duration, global = true)]
    pub billing_retry_base: Duration,

    /// How long `billing report` keeps retrying before it gives up (exit status 1).
    #[arg(long, env = "TOLLGATE_BILLING_REPORT_TIMEOUT", default_value = "5m",
          value_parser = parse_duration, global = true)]
    pub billing_report_timeout: Duration,

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

    /// The usage log (write-ahead log): a usage batch is acknowledged only once it is on this
    /// sidecar's disk, and replayed into the aggregates at start and when Redis lost its data,
    /// so a Redis restart or a crash of this sidecar loses no usage. On by default
    /// (`on`/`off`); off: what was not flushed yet is lost by either.
    #[arg(long, env = "TOLLGATE_USAGE_LOG", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new(), global = true)]
    pub usage_log: bool,

    /// The usage log's directory (created if missing; one sidecar per directory). Keep it on
    /// a persistent disk: it is what survives a crash.
    #[arg(
        long,
        env = "TOLLGATE_USAGE_LOG_DIR",
        default_value = "tollgate-usage-log",
        global = true
    )]
    pub usage_log_dir: std::path::PathBuf,

    /// The most bytes the usage log may hold (about 150 bytes per record; truncated after each
    /// flush). Beyond it, or when the disk is full, usage batches get 503 and the filter keeps
    /// them and sends them again.
    #[arg(long, env = "TOLLGATE_USAGE_LOG_MAX_BYTES", default_value_t = 1 << 30,
          value_parser = clap::value_parser!(u64).range(4096..), global = true)]
    pub usage_log_max_bytes: u64,

    /// How often `serve` evaluates the quota alerts (`30s`, `1m`): thresholds of each
    /// tenant's `monthly_quota` and the period-ending warning. Deliveries due are sent
    /// continuously (checked every second, and at once after a round decided some).
    #[arg(long, env = "TOLLGATE_ALERT_INTERVAL", default_value = "60s",
          value_parser = parse_duration, global = true)]
    pub alert_interval: Duration,

    /// The SMTP server for alert e-mails: `smtp://host:25` (no TLS), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS), with `user:password@` to log in. Unset: no alert
    /// e-mails (webhooks only). Never logged.
    #[arg(long, env = "TOLLGATE_SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<String>,

    /// The From address of alert e-mails (`alerts@example.com` or `Tollgate <alerts@example.com>`).
    #[arg(
        long,
        env = "TOLLGATE_ALERT_FROM",
        default_value = "Tollgate <tollgate@localhost>",
        global = true
    )]
    pub alert_from: String,

    /// How long one webhook POST or one SMTP exchange may take before the attempt counts as
    /// failed (and is retried).
    #[arg(long, env = "TOLLGATE_ALERT_TIMEOUT", default_value = "15s",
          value_parser = parse_duration, global = true)]
    pub alert_timeout: Duration,

    /// The waits between a failed alert delivery's attempts, comma-separated: the default is
    /// eight attempts over about 32 hours (each wait up to 10 % longer at random, at least a
    /// webhook's `Retry-After`); after the last the delivery fails for good.
    #[arg(long, env = "TOLLGATE_ALERT_RETRY_SCHEDULE",
          default_value = DEFAULT_ALERT_SCHEDULE,
          value_parser = parse_schedule, global = true)]
    pub alert_retry_schedule: RetrySchedule,

    /// Test hook (not for production): after a round of alert evaluation commits new alerts,
    /// wait this long before anything delivers them, so a test can kill the process between
    /// the decision and the delivery.
    #[arg(long, env = "TOLLGATE_TEST_ALERTS_PAUSE_AFTER_DECISION", value_parser = parse_duration,
          global = true, hide = true)]
    pub test_alerts_pause_after_decision: Option<Duration>,

    /// The secret sign-in links to the dashboard are signed with (HMAC-SHA256; at least 32
    /// random characters). Unset: a random one per process, so links die with a restart and
    /// several sidecars behind one address do not accept each other's links. Never logged.
    #[arg(
        long,
        env = "TOLLGATE_DASHBOARD_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub dashboard_secret: Option<String>,

    /// How long a dashboard sign-in link (POST /v1/admin/tenants/{id}/dashboard-link) can be
    /// used, once (`15m`, `1h`).
    #[arg(long, env = "TOLLGATE_DASHBOARD_LINK_TTL", default_value = "15m",
          value_parser = parse_duration, global = true)]
    pub dashboard_link_ttl: Duration,

    /// How long a dashboard session (its cookie) lasts after signing in.
    #[arg(long, env = "TOLLGATE_DASHBOARD_SESSION_TTL", default_value = "12h",
          value_parser = parse_duration, global = true)]
    pub dashboard_session_ttl: Duration,

    /// How often an open dashboard page refreshes its figures.
    #[arg(long, env = "TOLLGATE_DASHBOARD_REFRESH", default_value = "5s",
          value_parser = parse_duration, global = true)]
    pub dashboard_refresh: Duration,

    /// Mark the dashboard's session cookie `Secure` (set it when the dashboard is served over
    /// HTTPS, e.g. behind the proxy). `on`/`off`.
    #[arg(long, env = "TOLLGATE_DASHBOARD_SECURE_COOKIE", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dashboard_secure_cookie: bool,
}

/// A retry schedule: the waits after each failed attempt (one clap value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

/// The default alert retry schedule: the waits after the 1st, 2nd, … failed attempt.
pub const DEFAULT_ALERT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,14h";

/// Parses a retry schedule: comma-separated durations (`5s,5m,30m,2h`).
fn parse_schedule(text: &str) -> Result<RetrySchedule, String> {
    text.split(',')
        .map(|part| parse_duration(part.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map(RetrySchedule)
}

impl Settings {
    /// The usage log's settings; `None` when it is off.
    pub fn usage_log(&self) -> Option<crate::wal::LogSettings> {
        self.usage_log.then(|| crate::wal::LogSettings {
            dir: self.usage_log_dir.clone(),
            max_bytes: self.usage_log_max_bytes,
        })
    }

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

    /// Why `serve` must not start with these settings: a non-loopback listen address without
    /// both a node token and an admin token (anyone who reaches it could post usage or write
    /// the registry).
    pub fn exposure_error(&self) -> Option<String> {
        let set = |token: &Option<String>| token.as_deref().is_some_and(|t| !t.trim().is_empty());
        if self.listen.ip().is_loopback() || (set(&self.node_token) && set(&self.admin_token)) {
            return None;
        }
        Some(format!(
            "refusing to listen on {} (not a loopback address) without both TOLLGATE_NODE_TOKEN \
             and TOLLGATE_ADMIN_TOKEN: anyone who can reach it could post usage or write the \
             registry; set both (the filter sends sidecar.token) or listen on 127.0.0.1",
            self.listen
        ))
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
    #[test]
    fn the_default_alert_schedule_spans_more_than_a_day() {
        let RetrySchedule(schedule) = super::parse_schedule(super::DEFAULT_ALERT_SCHEDULE).unwrap();
        assert_eq!(schedule.len(), 7);
        let total: Duration = schedule.iter().sum();
        assert!(total > Duration::from_secs(86_400), "{total:?}");
        assert!(super::parse_schedule("5s,,1m").is_err());
    }

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
