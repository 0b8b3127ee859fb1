//! A Redis for tests, in one place for every test that needs one (the stores' unit tests and
//! the integration tests).
//!
//! [`TestRedis::start`] uses `TOLLGATE_TEST_REDIS_URL` when it is set; otherwise it starts a
//! throw-away `redis-server` on a free loopback port (no persistence, its own temporary
//! directory), waits until it answers `PING`, and kills it (by PID) when dropped. When no
//! `redis-server` can be started the test fails (see [`crate::missing`] for the explicit local
//! skip).

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
    /// `TOLLGATE_TEST_REDIS_URL`, or a fresh `redis-server`. When none can be started it
    /// panics, or returns `None` (after saying why on stderr) if a skip was asked for
    /// explicitly ([`crate::missing`]).
    pub fn start() -> Option<TestRedis> {
        if let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") {
            return Some(TestRedis {
                url,
                child: None,
                dir: None,
                port: 0,
            });
        }
        Self::start_throw_away()
    }

    /// A fresh throw-away `redis-server` whatever `TOLLGATE_TEST_REDIS_URL` says: for tests
    /// that stop and restart their server. Same rule as [`start`](Self::start) when none can
    /// be started.
    pub fn start_throw_away() -> Option<TestRedis> {
        match Self::spawn() {
            Ok(redis) => Some(redis),
            Err(why) => {
                let message = format!(
                    "no Redis for this test: {why}; set TOLLGATE_TEST_REDIS_URL or install \
                     redis-server ({INSTALL_HINT})"
                );
                crate::missing(&message);
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

/// How long a fresh cluster may take to reach `cluster_state:ok`.
const CLUSTER_STARTUP: Duration = Duration::from_secs(30);

/// A throw-away three-node Redis Cluster on loopback (no replicas, no persistence, its own
/// temporary directory); every node is killed (by PID) when dropped. Same skip rule as
/// [`TestRedis::start`]: fails when `redis-server`/`redis-cli` are missing ([`crate::missing`]).
pub struct TestCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl TestCluster {
    /// A fresh cluster; when none can be started it panics, or returns `None` if a skip was
    /// asked for explicitly ([`crate::missing`]).
    pub fn start() -> Option<TestCluster> {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::spawn_once() {
                Ok(cluster) => return Some(cluster),
                Err(why) => last_error = why,
            }
        }
        let message = format!(
            "no Redis Cluster for this test: {last_error}; install redis-server and redis-cli \
             ({INSTALL_HINT})"
        );
        crate::missing(&message);
        None
    }

    /// The seed URLs, comma separated (for `RedisStore::new_cluster`).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// How many keys the node on `port` holds (`DBSIZE`: a cluster node holds only the keys
    /// of its own slots).
    pub fn keys_on(&self, port: u16) -> Result<u64, String> {
        redis_cli(port, &["dbsize"])?
            .trim()
            .parse()
            .map_err(|e| format!("DBSIZE on {port}: {e}"))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> Result<u16, String> {
        redis_cli(self.ports[0], &["cluster", "keyslot", key])?
            .trim()
            .parse()
            .map_err(|e| format!("CLUSTER KEYSLOT {key}: {e}"))
    }

    fn spawn_once() -> Result<TestCluster, String> {
        let mut ports = Vec::new();
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("no free loopback port: {e}"))?;
        for listener in &listeners {
            ports.push(
                listener
                    .local_addr()
                    .map_err(|e| format!("no free loopback port: {e}"))?
                    .port(),
            );
        }
        drop(listeners);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let mut cluster = TestCluster {
            ports,
            children: Vec::new(),
            dir,
        };
        for port in cluster.ports.clone() {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server: {e}"))?;
            cluster.children.push(child);
        }
        let deadline = Instant::now() + STARTUP;
        for &port in &cluster.ports {
            while !ping(SocketAddr::from(([127, 0, 0, 1], port))) {
                if Instant::now() > deadline {
                    return Err(format!("cluster node {port} did not answer PING"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        let deadline = Instant::now() + CLUSTER_STARTUP;
        loop {
            let ok = cluster.ports.iter().all(|&port| {
                redis_cli(port, &["cluster", "info"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster did not reach cluster_state:ok within {CLUSTER_STARTUP:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `redis-cli -p port args…`'s standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !output.status.success() {
        return Err(format!("redis-cli {args:?} failed ({})", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
