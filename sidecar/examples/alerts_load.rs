//! Quota alert evaluation for many tenants: `--tenants` tenants (anchor days 1 to 28, one in
//! ten with a webhook, one in twenty with an alert e-mail) on a plan with a monthly quota,
//! `--days` × `--endpoints` rows of usage each, seeded straight into a fresh database (SQLite
//! file or a throw-away PostgreSQL, `tollgate-test-support`), then `--rounds` evaluation rounds
//! as of now ([`Evaluator::evaluate`], the `serve` job's work, deliveries not sent). The first
//! round records what is due (a mass firing); the others find it recorded (the steady state,
//! every minute in production). Prints one line of JSON with every round's seconds.
//!
//! ```sh
//! cargo run --release -p tollgate-sidecar --example alerts_load -- --database sqlite --tenants 100000
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::services::alerts::{Evaluator, Outbox};
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::system_clock;
use tollgate_test_support::postgres::TestPostgres;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// `sqlite` or `postgres`.
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Tenants with a quota.
    #[arg(long, default_value_t = 100_000)]
    tenants: u64,
    /// Days of usage per tenant (today and the days before).
    #[arg(long, default_value_t = 3)]
    days: u64,
    /// Endpoints per tenant and day.
    #[arg(long, default_value_t = 2)]
    endpoints: u64,
    /// Evaluation rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _server;
    let database = match args.database.as_str() {
        "postgres" => {
            let Some(server) = TestPostgres::start() else {
                eprintln!("no PostgreSQL binaries to start a throw-away server");
                return ExitCode::FAILURE;
            };
            let url = server.fresh_database().await;
            _server = server;
            Database::connect(Some(&url)).await.unwrap()
        }
        "sqlite" => {
            let path = std::env::temp_dir()
                .join(format!("tollgate-alerts-load-{}.db", std::process::id()));
            let _ = std::fs::remove_file(&path);
            Database::connect(Some(&format!("sqlite://{}?mode=rwc", path.display())))
                .await
                .unwrap()
        }
        other => {
            eprintln!("--database is sqlite or postgres, not {other:?}");
            return ExitCode::FAILURE;
        }
    };
    database.migrate().await.unwrap();
    let now = system_clock() / 1_000_000_000;
    let today = tollgate_filter::usage::format_date(i64::try_from(now / 86_400).unwrap());
    let seeding = Instant::now();
    seed(&database, &args, &today).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let store = Arc::new(database.clone());
    let evaluator = Evaluator {
        store: Arc::clone(&store),
        usage: store,
        metrics: Arc::new(Metrics::new()),
        email: true,
        outbox: Outbox::default(),
        pause_after_decision: None,
    };
    let mut rounds = Vec::new();
    let mut fired = Vec::new();
    for _ in 0..args.rounds {
        let started = Instant::now();
        let round = evaluator.evaluate(now, now * 1_000).await.unwrap();
        rounds.push(started.elapsed().as_secs_f64());
        assert_eq!(round.tenants as u64, args.tenants);
        fired.push(round.fired);
    }
    assert!(fired.iter().skip(1).all(|&f| f == 0), "{fired:?}");
    let mut steady: Vec<f64> = rounds.iter().skip(1).copied().collect();
    steady.sort_by(f64::total_cmp);
    let median = steady.get(steady.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{{\"database\": \"{}\", \"tenants\": {}, \"usage_rows\": {}, \"seed_seconds\": {seed_seconds:.2}, \
         \"fired_first_round\": {}, \"round_seconds\": {:?}, \"steady_median_seconds\": {median:.3}}}",
        args.database,
        args.tenants,
        args.tenants * args.days * args.endpoints,
        fired.first().copied().unwrap_or(0),
        rounds
            .iter()
            .map(|s| (s * 1000.0).round() / 1000.0)
            .collect::<Vec<_>>(),
    );
    database.close().await;
    ExitCode::SUCCESS
}

/// The plan, the tenants and their usage, a few statements each.
async fn seed(database: &Database, args: &Args, today: &str) {
    let plan = "INSERT INTO plans (name, requests_per_minute, monthly_quota, overage, overage_per, \
                overage_amount, overage_currency, billing, meter_event_name, created_at, updated_at) \
                VALUES ('small', 100, 1000, 'bill', 100, 25, 'usd', 'none', 'api_requests', 0, 0)";
    // Requests per row spread so that totals fall on both sides of 80 % and 100 % of 1,000.
    match database {
        Database::Sqlite(pool) => {
            sqlx::query(plan).execute(pool).await.unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
                 INSERT INTO tenants (id, plan, billing_anchor_day, status, webhook_url, \
                 webhook_secret, alert_email, created_at, updated_at) \
                 SELECT printf('t%07d', i), 'small', i % 28 + 1, 'active', \
                 CASE WHEN i % 10 = 0 THEN 'http://127.0.0.1:9/hook' END, \
                 CASE WHEN i % 10 = 0 THEN 'whsec_c2VjcmV0' END, \
                 CASE WHEN i % 20 = 0 THEN 'ops@example.com' END, 0, 0 FROM n",
            )
            .bind(args.tenants as i64)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1), \
                 d(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM d WHERE k + 1 < $2), \
                 e(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM e WHERE j + 1 < $3) \
                 INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests) \
                 SELECT printf('t%07d', i), date($4, '-' || k || ' days'), 'GET /e' || j, \
                 'small', (i * 7919 + k * 31 + j * 17) % (2400 / ($2 * $3)) FROM n, d, e",
            )
            .bind(args.tenants as i64)
            .bind(args.days as i64)
            .bind(args.endpoints as i64)
            .bind(today)
            .execute(pool)
            .await
            .unwrap();
        }
        Database::Postgres(pool) => {
            sqlx::query(plan).execute(pool).await.unwrap();
            sqlx::query(
                "INSERT INTO tenants (id, plan, billing_anchor_day, status, webhook_url, \
                 webhook_secret, alert_email, created_at, updated_at) \
                 SELECT 't' || lpad(i::text, 7, '0'), 'small', i % 28 + 1, 'active', \
                 CASE WHEN i % 10 = 0 THEN 'http://127.0.0.1:9/hook' END, \
                 CASE WHEN i % 10 = 0 THEN 'whsec_c2VjcmV0' END, \
                 CASE WHEN i % 20 = 0 THEN 'ops@example.com' END, 0, 0 \
                 FROM generate_series(0, $1 - 1) AS i",
            )
            .bind(args.tenants as i64)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests) \
                 SELECT 't' || lpad(i::text, 7, '0'), $4::date - k::int, 'GET /e' || j, 'small', \
                 (i * 7919 + k * 31 + j * 17) % (2400 / ($2 * $3)) \
                 FROM generate_series(0, $1 - 1) AS i, generate_series(0, $2 - 1) AS k, \
                 generate_series(0, $3 - 1) AS j",
            )
            .bind(args.tenants as i64)
            .bind(args.days as i64)
            .bind(args.endpoints as i64)
            .bind(today)
            .execute(pool)
            .await
            .unwrap();
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        }
    }
}
