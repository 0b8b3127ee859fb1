//! A PostgreSQL for tests, in one place for every test that needs one.
//!
//! [`TestPostgres::start`] uses `TOLLGATE_TEST_DATABASE_URL` when it is set (a server the test
//! may create databases on); otherwise it runs `initdb` into its own temporary directory and
//! starts a throw-away `postgres` on a free loopback port (as the `postgres` user when the
//! tests run as root: PostgreSQL refuses to run as root), waits until `pg_isready` says it
//! accepts connections, and stops it (SIGINT to its PID: a fast shutdown) when dropped. When
//! none can be started the test fails (see [`crate::missing`] for the explicit local skip).
//!
//! Each test takes its own database from [`TestPostgres::fresh_database`].

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// How to get PostgreSQL when the machine has none.
pub const INSTALL_HINT: &str = "apt-get install postgresql";

/// How long a fresh server may take to accept connections, and to stop.
const STARTUP: Duration = Duration::from_secs(30);

/// A PostgreSQL server for one test; a throw-away server is stopped on drop.
pub struct TestPostgres {
    /// The `postgres` database on the server, as its superuser.
    url: String,
    /// The throw-away server (`None` when stopped or for `TOLLGATE_TEST_DATABASE_URL`).
    child: Option<Child>,
    /// The throw-away server's directory (`None` for `TOLLGATE_TEST_DATABASE_URL`).
    dir: Option<PathBuf>,
}

impl TestPostgres {
    /// `TOLLGATE_TEST_DATABASE_URL`, or a fresh server. When none can be started it panics,
    /// or returns `None` (after saying why on stderr) if a skip was asked for explicitly
    /// ([`crate::missing`]).
    pub fn start() -> Option<TestPostgres> {
        if let Ok(url) = std::env::var("TOLLGATE_TEST_DATABASE_URL") {
            return Some(TestPostgres {
                url,
                child: None,
                dir: None,
            });
        }
        let mut last_error = String::new();
        // A free port can be taken by someone else before postgres binds it: try again.
        for _ in 0..3 {
            match Self::spawn() {
                Ok(postgres) => return Some(postgres),
                Err(why) => last_error = why,
            }
        }
        let message = format!(
            "no PostgreSQL for this test: {last_error}; set TOLLGATE_TEST_DATABASE_URL or \
             install PostgreSQL ({INSTALL_HINT})"
        );
        crate::missing(&message);
        None
    }

    /// The server's `postgres` database (or `TOLLGATE_TEST_DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates a database no other test uses and returns its URL.
    pub async fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "tollgate_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut connection = PgConnectOptions::from_str(&self.url)
            .expect("TOLLGATE_TEST_DATABASE_URL is not a postgres:// URL")
            .connect()
            .await
            .expect("cannot connect to the test PostgreSQL");
        connection
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let _ = connection.close().await;
        with_database(&self.url, &name)
    }

    fn spawn() -> Result<TestPostgres, String> {
        let initdb = find_binary("initdb")?;
        let postgres = find_binary("postgres")?;
        let pg_isready = find_binary("pg_isready")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-postgres-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        // From here on, dropping `server` removes the directory (and stops the server).
        let mut server = TestPostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            child: None,
            dir: Some(dir.clone()),
        };
        let user = server_user()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {dir:?} to the postgres user: {e}"))?;
        }
        let data = dir.join("data");
        let output = as_user(Command::new(&initdb), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {initdb:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let log_path = dir.join("postgres.log");
        let log = File::create(&log_path).map_err(|e| format!("cannot create the log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot create the log: {e}"))?;
        let child = as_user(Command::new(&postgres), user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {postgres:?}: {e}"))?;
        server.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            let ready = Command::new(&pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-U", "postgres", "-d", "postgres"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(server);
            }
            if let Some(child) = &mut server.child
                && let Ok(Some(status)) = child.try_wait()
            {
                server.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "postgres exited at start-up ({status}): {}",
                    log.trim()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not accept connections within {STARTUP:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the throw-away server: SIGINT (fast shutdown) to its PID, SIGKILL if it has not
    /// exited within [`STARTUP`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `url` with its database (the path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// `name` on the `PATH`, else in the newest `/usr/lib/postgresql/*/bin` (Debian keeps the
/// server binaries there).
fn find_binary(name: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    debian.sort_by_key(|dir| std::cmp::Reverse(version_of(dir)));
    on_path
        .into_iter()
        .chain(debian)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("no {name} on the PATH or in /usr/lib/postgresql/*/bin"))
}

/// The major version in `/usr/lib/postgresql/<version>/bin` (0 if it is not a number).
fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|version| version.to_str())
        .and_then(|version| version.parse().ok())
        .unwrap_or(0)
}

/// The `postgres` user's uid and gid when the tests run as root (PostgreSQL refuses to run as
/// root), `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    let id = |args: &[&str]| -> Result<u32, String> {
        let output = Command::new("id")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "`id {}` failed: running as root needs a postgres user",
                    args.join(" ")
                )
            })
    };
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    Ok(Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?)))
}

/// `command`, run as `user` when given.
fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}
