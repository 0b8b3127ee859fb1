//! The usage database's migrations, on a SQLite file and on a throw-away PostgreSQL
//! (`support/postgres.rs`): the contract's table, columns and primary key, idempotence, and
//! `tollgate-sidecar migrate`/`serve` as a process (exit status and one-line errors).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use support::postgres::TestPostgres;
use tollgate_sidecar::storage::sql::Database;

/// The columns other tools read from `api_usage_daily` (a stable contract: never renamed or
/// dropped), and the primary key in order.
const CONTRACT_COLUMNS: [&str; 9] = [
    "tenant_id",
    "date",
    "endpoint",
    "plan",
    "requests",
    "bytes_in",
    "bytes_out",
    "errors_4xx",
    "errors_5xx",
];
const PRIMARY_KEY: [&str; 3] = ["tenant_id", "date", "endpoint"];

/// What usage metering adds.
const METERING_COLUMNS: [&str; 3] = ["latency_ms_sum", "latency_buckets", "updated_at"];

const INSERT: &str = "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests) \
                      VALUES ('tenant-a', '2026-11-26', 'GET /v1/items', 'pro', 1)";

#[tokio::test]
async fn sqlite_file_gets_the_contract_table_once() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let database = Database::connect(Some(&url)).await.unwrap();
    assert_eq!(database.migrate().await.unwrap(), 5);
    assert_eq!(database.migrate().await.unwrap(), 0);
    let Database::Sqlite(pool) = &database else {
        panic!("{url} is not SQLite");
    };

    let rows = sqlx::query("SELECT name, pk FROM pragma_table_info('api_usage_daily')")
        .fetch_all(pool)
        .await
        .unwrap();
    let columns: Vec<String> = rows.iter().map(|row| row.get("name")).collect();
    assert_has_columns(&columns);
    let mut key: Vec<(i64, String)> = rows
        .iter()
        .map(|row| (row.get("pk"), row.get("name")))
        .filter(|(position, _)| *position > 0)
        .collect();
    key.sort();
    let key: Vec<&str> = key.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(key, PRIMARY_KEY);

    sqlx::query(INSERT).execute(pool).await.unwrap();
    let again = sqlx::query(INSERT).execute(pool).await.unwrap_err();
    assert!(is_unique_violation(&again), "{again}");
    let (buckets, updated_at): (String, String) =
        sqlx::query_as("SELECT latency_buckets, updated_at FROM api_usage_daily")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(buckets, "[]");
    assert!(updated_at.ends_with('Z'), "{updated_at}");
    database.close().await;

    // A new connection (a restarted sidecar) finds nothing to do and the row still there.
    let database = Database::connect(Some(&url)).await.unwrap();
    assert_eq!(database.migrate().await.unwrap(), 0);
    let Database::Sqlite(pool) = &database else {
        panic!("{url} is not SQLite");
    };
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_usage_daily")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    database.close().await;
}

#[tokio::test]
async fn postgres_gets_the_contract_table_once() {
    let Some(postgres) = TestPostgres::start() else {
        return;
    };
    let url = postgres.fresh_database().await;
    let database = Database::connect(Some(&url)).await.unwrap();
    assert_eq!(database.kind(), "PostgreSQL");
    assert_eq!(database.migrate().await.unwrap(), 5);
    assert_eq!(database.migrate().await.unwrap(), 0);
    let Database::Postgres(pool) = &database else {
        panic!("{url} is not PostgreSQL");
    };

    let rows = sqlx::query(
        "SELECT column_name::text AS name, data_type::text AS type \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'api_usage_daily'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let columns: Vec<String> = rows.iter().map(|row| row.get("name")).collect();
    assert_has_columns(&columns);
    let type_of = |column: &str| -> String {
        rows.iter()
            .find(|row| row.get::<String, _>("name") == column)
            .map(|row| row.get("type"))
            .unwrap()
    };
    assert_eq!(type_of("tenant_id"), "text");
    assert_eq!(type_of("date"), "date");
    assert_eq!(type_of("requests"), "bigint");
    assert_eq!(type_of("latency_buckets"), "ARRAY");

    let key: Vec<String> = sqlx::query_scalar(
        "SELECT k.column_name::text \
         FROM information_schema.table_constraints c \
         JOIN information_schema.key_column_usage k \
           ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema \
         WHERE c.table_schema = current_schema() AND c.table_name = 'api_usage_daily' \
           AND c.constraint_type = 'PRIMARY KEY' \
         ORDER BY k.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(key, PRIMARY_KEY);

    sqlx::query(INSERT).execute(pool).await.unwrap();
    let again = sqlx::query(INSERT).execute(pool).await.unwrap_err();
    assert!(is_unique_violation(&again), "{again}");
    database.close().await;

    // The binary on the same database: nothing left to apply.
    let dir = TempDir::new();
    let run = sidecar(&["migrate", "--database-url", &url], dir.path());
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("usage database up to date"),
        "{}",
        run.stderr
    );
}

#[test]
fn migrate_defaults_to_tollgate_db_in_the_working_directory() {
    let dir = TempDir::new();
    let first = sidecar(&["migrate"], dir.path());
    assert!(first.status.success(), "{}", first.stderr);
    assert!(
        first.stderr.contains("applied 5 migration(s)"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains("sqlite://tollgate.db?mode=rwc"));
    assert!(dir.path().join("tollgate.db").is_file());
    let second = sidecar(&["migrate"], dir.path());
    assert!(second.status.success(), "{}", second.stderr);
    assert!(
        second.stderr.contains("usage database up to date"),
        "{}",
        second.stderr
    );
}

#[test]
fn migrate_and_serve_fail_in_one_line_when_postgres_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://tollgate:s3cret@127.0.0.1:{port}/x");
    let dir = TempDir::new();
    for command in ["migrate", "serve"] {
        let run = sidecar(
            &[command, "--database-url", &url, "--listen", "127.0.0.1:0"],
            dir.path(),
        );
        assert_eq!(run.status.code(), Some(1), "{command}: {}", run.stderr);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| line.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "{command}: {}", run.stderr);
        let expected = format!("cannot connect to postgres://tollgate@127.0.0.1:{port}/x: ");
        assert!(errors[0].contains(&expected), "{command}: {}", run.stderr);
        assert!(!run.stderr.contains("s3cret"), "{command}: {}", run.stderr);
        assert!(
            !run.stderr.contains("listening"),
            "{command}: {}",
            run.stderr
        );
    }
}

#[test]
fn migrate_refuses_a_url_it_does_not_know() {
    let dir = TempDir::new();
    let run = sidecar(
        &["migrate", "--database-url", "mysql://root:s3cret@db/x"],
        dir.path(),
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("mysql://root@db/x is not a usage database URL"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
}

fn assert_has_columns(columns: &[String]) {
    for column in CONTRACT_COLUMNS.iter().chain(&METERING_COLUMNS) {
        assert!(
            columns.iter().any(|name| name == column),
            "no {column} in {columns:?}"
        );
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.is_unique_violation())
}

/// A finished `tollgate-sidecar` run.
struct Run {
    status: ExitStatus,
    stderr: String,
}

/// Runs `tollgate-sidecar args…` in `dir` without any `TOLLGATE_*` variable of ours, and
/// waits for it to exit (killed, and the test failed, after 60 s).
fn sidecar(args: &[&str], dir: &Path) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOLLGATE_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "tollgate-sidecar {args:?} did not exit: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A directory of its own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-db-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_starting_together_on_one_sqlite_file_all_migrate() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let mut runs = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        runs.push(tokio::spawn(async move {
            let database = Database::connect(Some(&url)).await.unwrap();
            let applied = database.migrate().await;
            database.close().await;
            applied
        }));
    }
    for run in runs {
        let applied = run.await.unwrap().unwrap();
        assert!(applied <= 5, "{applied}"); // 0001_usage … 0004_registry, 0008_dashboard
    }
    let database = Database::connect(Some(&url)).await.unwrap();
    assert_eq!(database.migrate().await.unwrap(), 0);
    database.close().await;
}
