//! `tollgate-sidecar serve` with `TOLLGATE_REDIS_URL`: two sidecar processes share one Redis,
//! so a bucket's limit holds across both.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::http;
use support::redis::TestRedis;

/// A sidecar process, killed on drop.
struct Sidecar {
    child: Child,
    address: SocketAddr,
    log: std::path::PathBuf,
}

impl Sidecar {
    fn start(redis_url: &str) -> Sidecar {
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::env::temp_dir().join(format!(
            "tollgate-sidecar-{}-{}.log",
            std::process::id(),
            address.port()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
            .env("TOLLGATE_LISTEN", address.to_string())
            .env("TOLLGATE_DATABASE_URL", "sqlite::memory:")
            .env("TOLLGATE_REDIS_URL", redis_url)
            .env("TOLLGATE_USAGE_LOG_DIR", log.with_extension("usage-log"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut sidecar = Sidecar {
            child,
            address,
            log,
        };
        sidecar.wait_until_ready();
        sidecar
    }

    /// Polls `/readyz` until it answers 200.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http(self.address, "GET", "/readyz", "") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the sidecar exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "not ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn two_sidecars_share_buckets_through_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let (a, b) = (Sidecar::start(redis.url()), Sidecar::start(redis.url()));
    assert!(a.log().contains("counters in Redis"), "{}", a.log());
    // A rule name no earlier run used, since the system clock decides the window.
    let rule = redis.unique_prefix();
    let check = format!(
        r#"{{"rule":"{rule}","key":1,"algorithm":"fixed_window","limit":2,"window_ns":3600000000000}}"#
    );
    let admitted = |sidecar: &Sidecar| {
        let (status, body) = http(sidecar.address, "POST", "/v1/check", &check).unwrap();
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["admitted"].as_bool().unwrap()
    };
    assert_eq!(
        [admitted(&a), admitted(&b), admitted(&a), admitted(&b)],
        [true, true, false, false]
    );
    // A global batch through one sidecar sees the strict checks of both.
    let batch = format!(
        r#"{{"sender":1,"node":1,"seq":1,"entries":[{{"rule":"{rule}","key":1,
            "algorithm":"fixed_window","limit":2,"window_ns":3600000000000,"hits":0}}]}}"#
    );
    let (status, body) = http(b.address, "POST", "/v1/sync", &batch).unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["totals"][0]["remaining"], 0, "{body}");
    // Every Redis round trip is timed: the serve command wires the store to the metrics.
    let (status, metrics) = http(a.address, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("# TYPE tollgate_redis_seconds histogram")
            && !metrics.contains("tollgate_redis_seconds_count 0"),
        "{metrics}"
    );
}
