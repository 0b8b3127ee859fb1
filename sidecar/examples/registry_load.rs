//! Admin API write throughput on PostgreSQL: a throw-away PostgreSQL server
//! (`tollgate-test-support`, needs `postgres`/`initdb` on the PATH or under
//! /usr/lib/postgresql), the admin routes served on a loopback socket, and `--connections`
//! keep-alive HTTP/1.1 connections writing back to back for `--seconds` (at most `--max-writes`
//! in all): each connection alternates `PUT /v1/admin/tenants/{id}` (a new tenant) and
//! `POST /v1/admin/tenants/{id}/keys`. Prints one line of JSON; fails unless every answer is
//! 201.
//!
//! ```sh
//! cargo run -p tollgate-sidecar --example registry_load -- --connections 8 --seconds 5
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::admin::{AdminState, router};
use tollgate_sidecar::routes::tokens::TokenSet;
use tollgate_sidecar::services::registry::Registry;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::system_clock;
use tollgate_test_support::postgres::TestPostgres;

const TOKEN: &str = "load-admin-token";

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to write.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The most writes in all.
    #[arg(long, default_value_t = 50_000)]
    max_writes: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(server) = TestPostgres::start() else {
        eprintln!("no PostgreSQL binaries to start a throw-away server");
        return ExitCode::FAILURE;
    };
    let url = server.fresh_database().await;
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    let state = AdminState {
        registry: Registry::new(Arc::new(database.clone()), system_clock),
        admin: TokenSet::parse(Some(TOKEN)),
        metrics: Arc::new(Metrics::new()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let share = args.max_writes / args.connections as u64;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut connection = connect(address).await;
    let plan = put(
        &mut connection,
        "PUT",
        "/v1/admin/plans/free",
        r#"{"requests_per_minute": 60}"#,
    )
    .await;
    assert_eq!(plan, 201);
    let tasks: Vec<_> = (0..args.connections)
        .map(|c| tokio::spawn(writer(address, c, share, deadline)))
        .collect();
    let mut writes = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(n) => writes += n,
            Err(failure) => {
                eprintln!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"database\": \"postgres\", \"connections\": {}, \"writes\": {writes}, \"seconds\": {seconds:.2}, \"writes_per_second\": {:.0}}}",
        args.connections,
        writes as f64 / seconds
    );
    database.close().await;
    ExitCode::SUCCESS
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(address: std::net::SocketAddr) -> Sender {
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn put(sender: &mut Sender, method: &str, path: &str, body: &'static str) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "sidecar")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

async fn writer(
    address: std::net::SocketAddr,
    c: usize,
    share: u64,
    deadline: Instant,
) -> Result<u64, String> {
    let mut sender = connect(address).await;
    let mut writes = 0;
    let mut n = 0;
    while writes + 2 <= share && Instant::now() < deadline {
        let tenant = format!("/v1/admin/tenants/load-{c}-{n}");
        let status = put(&mut sender, "PUT", &tenant, r#"{"plan": "free"}"#).await;
        if status != 201 {
            return Err(format!("PUT {tenant}: {status}"));
        }
        let keys = format!("{tenant}/keys");
        let status = put(&mut sender, "POST", &keys, "").await;
        if status != 201 {
            return Err(format!("POST {keys}: {status}"));
        }
        writes += 2;
        n += 1;
    }
    Ok(writes)
}
