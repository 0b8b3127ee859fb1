//! A Redis for tests, in one place for every test that needs one (the store's unit tests
//! include this file by path; integration tests through `mod support`).
//!
//! [`TestRedis::start`] uses `TOLLGATE_TEST_REDIS_URL` when it is set; otherwise it starts a
//! throw-away `redis-server` on a free loopback port (no persistence, its own temporary
//! directory), waits until it answers `PING`, and kills it (by PID) when dropped. When no
//! `redis-server` can be started the test fails under `CI=true` and is skipped elsewhere.
#![allow(dead_code, clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How to get a Redis when the machine has none.
pub const INSTALL_HINT: &str = "apt-get install -y redis-server";

/// How long a fresh `redis-server` may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// A Redis for one test; a throw-away server is stopped on drop.
pub struct TestRedis {
    url: String,
    /// The throw-away server (`None` when stopped or for `TOLLGATE_TEST_REDIS_URL`).
    child: Option<Child>,
    /// The throw-away server's directory (`None` for `TOLLGATE_TEST_REDIS_URL`).
    dir: Option<PathBuf>,
    port: u16,
}

impl TestRedis {
    /// `TOLLGATE_TEST_REDIS_URL`, or a fresh `redis-server`. `None` (after saying why on
    /// stderr) when none can be started, unless `CI=true`: then it panics, so CI never passes
    /// a Redis test by skipping it.
    pub fn start() -> Option<TestRedis> {
        if let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") {
            return Some(TestRedis {
                url,
                child: None,
                dir: None,
                port: 0,
            });
        }
        match Self::spawn() {
            Ok(redis) => Some(redis),
            Err(why) => {
                let message = format!(
                    "no Redis for this test: {why}; set TOLLGATE_TEST_REDIS_URL or install \
                     redis-server ({INSTALL_HINT})"
                );
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("{message}");
                }
                eprintln!("skipped: {message}");
                None
            }
        }
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of the throw-away server (0 for `TOLLGATE_TEST_REDIS_URL`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A key prefix no other test (in this process or another) uses.
    pub fn unique_prefix(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "tollgate-test:{}:{nanos}:{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn spawn() -> Result<TestRedis, String> {
        // A free port can be taken by someone else before redis-server binds it: try again.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::spawn_once() {
                Ok(redis) => return Ok(redis),
                Err(why) => last_error = why,
            }
        }
        Err(last_error)
    }

    fn spawn_once() -> Result<TestRedis, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let mut redis = TestRedis {
            url: format!("redis://127.0.0.1:{port}"),
            child: None,
            dir: Some(dir),
            port,
        };
        redis.run_server()?;
        Ok(redis)
    }

    /// Whether this is a throw-away server the test may stop and restart.
    pub fn is_throw_away(&self) -> bool {
        self.dir.is_some()
    }

    /// Kills the throw-away server (by PID) and waits for it to exit; it forgets everything.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the throw-away server again on the same port (stopping it first if needed).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run_server()
    }

    fn run_server(&mut self) -> Result<(), String> {
        let dir = self.dir.as_ref().ok_or("not a throw-away redis-server")?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// Polls `PING` until the server answers, it exits, or [`STARTUP`] passes.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + STARTUP;
        loop {
            if ping(address) {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server exited at start-up ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING within {STARTUP:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a Redis at `address` answers `PING` with `+PONG`.
pub fn ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
