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
    let sqlite = Sqlite::new("log").await;
    contract::request_log::writes_reads_and_keeps_the_retention(&sqlite.database).await;
    sqlite.close().await;
    let sqlite = Sqlite::new("registry").await;
    contract::registry::keeps_plans_tenants_keys_and_versions(&sqlite.database).await;
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
    contract::request_log::writes_reads_and_keeps_the_retention(&database).await;
    database.close().await;
    let database = postgres(&server).await;
    contract::registry::keeps_plans_tenants_keys_and_versions(&database).await;
    database.close().await;
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
