//! The SQL storage contracts ([`super::contract`]) against both databases: SQLite in a
//! temporary file, PostgreSQL a throw-away server (`tollgate-test-support`).

use tollgate_test_support::postgres::TestPostgres;

use super::Database;
use super::contract;

/// A fresh, migrated SQLite file (removed when the test ends).
struct Sqlite {
    database: Database,
    path: std::path::PathBuf,
}

impl Sqlite {
    async fn new(name: &str) -> Sqlite {
        let path =
            std::env::temp_dir().join(format!("tollgate-sql-{name}-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let database = Database::connect(Some(&url)).await.unwrap();
        database.migrate().await.unwrap();
        Sqlite { database, path }
    }

    async fn close(self) {
        self.database.close().await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fresh, migrated database on `server`.
async fn postgres(server: &TestPostgres) -> Database {
    let url = server.fresh_database().await;
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    database
}

/// More rows than one statement of either database takes.
const MANY: usize = 2 * 5_000 + 1;

#[tokio::test]
async fn sqlite_meets_the_sql_contracts() {
    let sqlite = Sqlite::new("sink").await;
    contract::sink::adds_every_row_of_many_chunks(&sqlite.database, MANY).await;
    contract::sink::users_keep_the_larger_count(&sqlite.database).await;
    contract::sink::reports_committed_flush_ids(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("query").await;
    contract::query::reads_one_tenant_between_two_dates(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("period").await;
    contract::query::sums_each_tenants_own_period(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("log").await;
    contract::request_log::writes_reads_and_keeps_the_retention(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("registry").await;
    contract::registry::keeps_plans_tenants_keys_and_versions(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("removal").await;
    contract::registry::deletes_tenants_and_prunes_changes(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("alerts").await;
    contract::alerts::records_once_and_delivers_with_attempts(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("billing").await;
    contract::billing::flush_fills_the_outbox_once(&sqlite.database).await;
    sqlite.close().await;
}

#[tokio::test]
async fn postgres_meets_the_sql_contracts() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let database = postgres(&server).await;
    contract::sink::adds_every_row_of_many_chunks(&database, MANY).await;
    contract::sink::users_keep_the_larger_count(&database).await;
    contract::sink::reports_committed_flush_ids(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::query::reads_one_tenant_between_two_dates(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::query::sums_each_tenants_own_period(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::request_log::writes_reads_and_keeps_the_retention(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::registry::keeps_plans_tenants_keys_and_versions(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::registry::deletes_tenants_and_prunes_changes(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::alerts::records_once_and_delivers_with_attempts(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::billing::flush_fills_the_outbox_once(&database).await;
    database.close().await;
}

/// Writes `n` tenants (`tenant-1` …) with three days of usage each, in one statement.
pub(crate) async fn seed_tenants(database: &Database, n: i64) {
    match database {
        Database::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO api_usage_daily (tenant_id, date, endpoint, requests) \
                 SELECT 'tenant-' || g, DATE '2026-11-01' + d, 'GET /a', g \
                 FROM generate_series(1, $1) g, generate_series(0, 2) d",
            )
            .bind(n)
            .execute(pool)
            .await
            .unwrap();
        }
        Database::Sqlite(pool) => {
            sqlx::query(
                "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?), \
                 d(d) AS (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) \
                 INSERT INTO api_usage_daily (tenant_id, date, endpoint, requests) \
                 SELECT 'tenant-' || x, '2026-11-0' || d, 'GET /a', x FROM g, d",
            )
            .bind(n)
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

/// The median of three `period_requests` over `n` tenants (every second one's period
/// starting a day later), checked.
async fn time_period_requests(database: &Database, n: i64) -> std::time::Duration {
    use super::{TenantRange, UsageQueries};
    let ranges: Vec<TenantRange> = (1..=n)
        .map(|i| TenantRange {
            tenant: format!("tenant-{i}"),
            from: format!("2026-11-0{}", 1 + i % 2),
            to: "2026-11-30".into(),
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let totals = database.period_requests(&ranges).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(totals.len() as i64, n);
        assert_eq!(totals.get("tenant-3"), Some(&6));
        assert_eq!(totals.get("tenant-4"), Some(&12));
    }
    times.sort();
    times.get(1).copied().unwrap()
}

/// `period_requests` of 10,000 and 100,000 tenants on both databases (a measurement; run with
/// `cargo test -p tollgate-sidecar --release --lib period_requests_of_many_tenants --
/// --ignored --nocapture`).
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn period_requests_of_many_tenants() {
    let server = TestPostgres::start();
    for n in [10_000, 100_000] {
        let sqlite = Sqlite::new(&format!("many-{n}")).await;
        seed_tenants(&sqlite.database, n).await;
        let took = time_period_requests(&sqlite.database, n).await;
        eprintln!("sqlite: period_requests of {n} tenants: {took:?} (median of 3)");
        sqlite.close().await;
        if let Some(server) = &server {
            let database = postgres(server).await;
            seed_tenants(&database, n).await;
            let took = time_period_requests(&database, n).await;
            eprintln!("postgres: period_requests of {n} tenants: {took:?} (median of 3)");
            database.close().await;
        }
    }
}

#[tokio::test]
async fn sqlite_meets_the_dashboard_contract() {
    let sqlite = Sqlite::new("dashboard").await;
    contract::dashboard::links_are_single_use_and_sessions_end(&sqlite.database).await;
    contract::dashboard::summary_folds_like_the_rows(&sqlite.database).await;
    sqlite.close().await;
}

#[tokio::test]
async fn postgres_meets_the_dashboard_contract() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let database = postgres(&server).await;
    contract::dashboard::links_are_single_use_and_sessions_end(&database).await;
    contract::dashboard::summary_folds_like_the_rows(&database).await;
    database.close().await;
}
