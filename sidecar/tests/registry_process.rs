//! The registry through the `tollgate-sidecar` binary: the `plans`, `tenants` and `keys`
//! commands, keys created by the CLI and the admin API found in neither the SQLite file nor
//! the log, the usage API finding a registry key ("the registry wins"), and `serve` refusing
//! a non-loopback address without tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{http, request};
use support::temp::TempDir;

const ADMIN: &str = "admin-token-1";

fn sidecar(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"));
    command
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env_remove("TOLLGATE_NODE_TOKEN")
        .env_remove("TOLLGATE_ADMIN_TOKEN");
    command
}

/// `tollgate-sidecar args…` in `dir`; its output (stderr also appended to `log`).
fn cli(dir: &Path, log: &mut String, args: &[&str]) -> Output {
    let output = sidecar(dir).args(args).output().unwrap();
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    output
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

struct Serving {
    child: Child,
    address: SocketAddr,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, log: &Path) -> Serving {
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = sidecar(dir)
        .env("TOLLGATE_LISTEN", address.to_string())
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut serving = Serving { child, address };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http(address, "GET", "/readyz", ""), Ok((200, _))) {
        assert!(serving.child.try_wait().unwrap().is_none(), "exited");
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    serving
}

/// Every file under `dir` (the database, its journal, the logs, any directory the sidecar
/// made) as bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(contents(&path));
        } else {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

#[test]
fn cli_and_api_keys_are_never_stored_or_logged() {
    let dir = TempDir::new("registry-keys");
    let mut log = String::new();
    let plan = json_of(&cli(
        &dir.0,
        &mut log,
        &["plans", "put", "free", r#"{"requests_per_minute": 60}"#],
    ));
    assert_eq!(plan["requests_per_minute"], 60);
    let refused = cli(
        &dir.0,
        &mut log,
        &["tenants", "put", "acme", r#"{"plan": "gold"}"#],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("plan: unknown plan \\\"gold\\\"")
            || stderr.contains("plan: unknown plan \"gold\""),
        "{stderr}"
    );
    let refused = cli(
        &dir.0,
        &mut log,
        &[
            "tenants",
            "put",
            "acme",
            r#"{"plan": "free", "billing_anchor_day": 31}"#,
        ],
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("billing_anchor_day"),
        "refused with the field"
    );
    json_of(&cli(
        &dir.0,
        &mut log,
        &["tenants", "put", "acme", r#"{"plan": "free"}"#],
    ));
    let created = json_of(&cli(&dir.0, &mut log, &["keys", "create", "acme"]));
    let cli_key = created["key"].as_str().unwrap().to_owned();
    assert!(cli_key.starts_with("tg_"));
    let listed = json_of(&cli(&dir.0, &mut log, &["keys", "list", "acme"]));
    assert_eq!(listed["keys"][0]["key_id"], created["key_id"]);
    assert!(!listed.to_string().contains(&cli_key));
    let tenants = json_of(&cli(&dir.0, &mut log, &["tenants", "list"]));
    assert_eq!(tenants["tenants"][0]["id"], "acme");

    let log_path = dir.0.join("serve.log");
    let serving = serve(&dir.0, &log_path);
    let (status, body) = request(
        serving.address,
        "POST",
        "/v1/admin/tenants/acme/keys",
        Some(ADMIN),
        "",
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let api_key = serde_json::from_str::<Value>(&body).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The usage API knows registry keys (no TOLLGATE_FILTER_CONFIG at all).
    for key in [&cli_key, &api_key] {
        let (status, body) = request(
            serving.address,
            "GET",
            "/v1/usage/daily?days=1",
            Some(key),
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = request(
        serving.address,
        "GET",
        "/v1/usage/daily?days=1",
        Some("tg_unknown"),
        "",
    )
    .unwrap();
    assert_eq!(status, 503, "not a registry key, and no static tenants");
    drop(serving);
    let revoked = cli(
        &dir.0,
        &mut log,
        &["keys", "revoke", created["key_id"].as_str().unwrap()],
    );
    assert!(revoked.status.success());
    std::fs::write(dir.0.join("cli.log"), &log).unwrap();
    assert!(
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("listening")
    );
    let files = contents(&dir.0);
    let names: Vec<_> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("tollgate.db")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("serve.log")), "{names:?}");
    for (file, bytes) in files {
        for key in [&cli_key, &api_key] {
            let found = bytes.windows(key.len()).any(|w| w == key.as_bytes());
            assert!(!found, "{file} holds a plain key");
        }
    }
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = TempDir::new("registry-public");
    let output = sidecar(&dir.0)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("TOLLGATE_NODE_TOKEN"), "{stderr}");
}
