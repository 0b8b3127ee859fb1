//! Usage metering through the `tollgate-sidecar` binary: `serve` flushes on its interval and on
//! SIGTERM, `flush` flushes Redis once and exits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::process::http;
use support::redis::TestRedis;
use support::temp::TempDir;
use tollgate_filter::usage::{USAGE_PATH, UsageBatch, UsageRecord, utc_date};
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::usage::{RedisUsageStore, UsageStore};

fn today() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    utc_date(now.as_nanos() as u64)
}

fn batch(seq: u64) -> UsageBatch {
    let mut record = UsageRecord::new("acme", Some("pro"), &today(), "GET /api/reports");
    record.requests = 3;
    record.bytes_in = 30;
    record.bytes_out = 3_000;
    record.errors_4xx = 1;
    record.errors_5xx = 1;
    record.latency_ms_sum = 42;
    record.latency_buckets[2] = 3;
    record.users = vec![7, 8];
    UsageBatch {
        sender: 1,
        seq,
        records: vec![record],
        requests: Vec::new(),
    }
}

/// The counters, histogram and plan of a row of `api_usage_daily`.
type DbRow = (i64, i64, i64, i64, i64, i64, String, String);

/// `api_usage_daily` of the SQLite file at `path`: (requests, bytes_in, bytes_out, 4xx, 5xx,
/// latency sum, buckets, plan) of acme's row, if any; and acme's active users today.
async fn acme_row(path: &Path) -> Option<(Vec<i64>, String, String, i64)> {
    let url = format!("sqlite://{}", path.display());
    let database = Database::connect(Some(&url)).await.unwrap();
    let Database::Sqlite(pool) = &database else {
        panic!("not SQLite")
    };
    let row: Option<DbRow> = sqlx::query_as(
        "SELECT requests, bytes_in, bytes_out, errors_4xx, errors_5xx, latency_ms_sum, \
         latency_buckets, plan FROM api_usage_daily WHERE tenant_id = 'acme'",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    let users: Option<i64> =
        sqlx::query_scalar("SELECT users FROM api_active_users_daily WHERE tenant_id = 'acme'")
            .fetch_optional(pool)
            .await
            .unwrap();
    database.close().await;
    row.map(|(r, bi, bo, e4, e5, l, buckets, plan)| {
        (
            vec![r, bi, bo, e4, e5, l],
            buckets,
            plan,
            users.unwrap_or(0),
        )
    })
}

fn expected(times: i64) -> (Vec<i64>, String, String, i64) {
    let buckets: Vec<i64> = (0..12)
        .map(|i| if i == 2 { 3 * times } else { 0 })
        .collect();
    (
        vec![
            3 * times,
            30 * times,
            3_000 * times,
            times,
            times,
            42 * times,
        ],
        serde_json::to_string(&buckets).unwrap(),
        "pro".into(),
        2,
    )
}

struct Sidecar {
    child: Child,
    address: SocketAddr,
}

impl Sidecar {
    fn start(dir: &Path, envs: &[(&str, &str)]) -> Sidecar {
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"));
        command
            .current_dir(dir)
            .env("TOLLGATE_LISTEN", address.to_string())
            .env_remove("TOLLGATE_REDIS_URL")
            .env_remove("TOLLGATE_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut sidecar = Sidecar {
            child: command.spawn().unwrap(),
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http(address, "GET", "/readyz", ""), Ok((200, _))) {
            assert!(sidecar.child.try_wait().unwrap().is_none(), "exited");
            assert!(Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        sidecar.child.try_wait().unwrap();
        sidecar
    }

    fn post(&self, batch: &UsageBatch) {
        let body = serde_json::to_string(batch).unwrap();
        let (status, answer) = http(self.address, "POST", USAGE_PATH, &body).unwrap();
        assert_eq!(status, 200, "{answer}");
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serve_in_memory_flushes_on_sigterm() {
    let dir = TempDir::new("usage-sigterm");
    let sidecar = Sidecar::start(&dir.0, &[("TOLLGATE_FLUSH_INTERVAL", "1h")]);
    sidecar.post(&batch(1));
    sidecar.post(&batch(1)); // a retry: counted once
    sidecar.post(&batch(2));
    sidecar.terminate();
    let row = acme_row(&dir.0.join("tollgate.db")).await;
    assert_eq!(row, Some(expected(2)));
}

#[tokio::test]
async fn serve_with_redis_flushes_every_interval() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let dir = TempDir::new("usage-interval");
    let sidecar = Sidecar::start(
        &dir.0,
        &[
            ("TOLLGATE_FLUSH_INTERVAL", "100ms"),
            ("TOLLGATE_REDIS_URL", redis.url()),
        ],
    );
    sidecar.post(&batch(1));
    let path = dir.0.join("tollgate.db");
    let deadline = Instant::now() + Duration::from_secs(20);
    while acme_row(&path).await.is_none() {
        assert!(Instant::now() < deadline, "not flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(acme_row(&path).await, Some(expected(1)));
    sidecar.terminate();
    assert_eq!(acme_row(&path).await, Some(expected(1)));
}

#[tokio::test]
async fn the_flush_command_flushes_redis_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let dir = TempDir::new("usage-command");
    let store = RedisUsageStore::new(redis.url()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    store.ingest(&batch(1), now).await.unwrap();
    let flush = || {
        Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
            .arg("flush")
            .current_dir(&dir.0)
            .env("TOLLGATE_REDIS_URL", redis.url())
            .env_remove("TOLLGATE_DATABASE_URL")
            .output()
            .unwrap()
    };
    let first = flush();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let path = dir.0.join("tollgate.db");
    assert_eq!(acme_row(&path).await, Some(expected(1)));
    // Again: nothing more to add.
    assert!(flush().status.success());
    assert_eq!(acme_row(&path).await, Some(expected(1)));
    store.ingest(&batch(2), now).await.unwrap();
    assert!(flush().status.success());
    let mut twice = expected(2);
    twice.3 = 2;
    assert_eq!(acme_row(&path).await, Some(twice));
}
