//! A usage load generator for `bench/usage`: `--connections` keep-alive HTTP/1.1 connections
//! to a sidecar, each posting [`UsageBatch`]es to `POST /v1/usage` back to back for
//! `--seconds` (and at most `--max-batches` in all), then one line of JSON with what happened.
//!
//! Every batch has its own `(sender, seq)` (sender = connection number + `--sender-base`, seq
//! counting up from `--seq-base`), so nothing is a duplicate: the run fails unless every answer
//! is 200 with `applied` equal to the batch's records and `duplicate` 0. The key space is
//! `--tenants` × `--endpoints` keys of today (UTC); key `k` is tenant `k % tenants`, endpoint
//! `k / tenants`; batch `n` of connection `c` carries `--records` consecutive keys from
//! `(n × connections + c) × records` on (wrapping). Each record counts [`REQUESTS`] requests.
//! The records' JSON is built once; a batch is a short prefix and a copy of that text.
//!
//! With `--redis URL` it also sums the `requests` field of every live key
//! (`usage:{t}:<date>:<endpoint>`) before and after, pipelined, and fails unless the sum grew by
//! exactly the requests applied.
//!
//! ```sh
//! cargo run --release -p tollgate-sidecar --example usage_load -- \
//!     --url http://127.0.0.1:8080 --connections 16 --seconds 5 --redis redis://127.0.0.1:6379
//! ```
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tollgate_filter::usage::{USAGE_PATH, UsageRecord, UsageResponse, utc_date};

/// Requests each record counts (bytes and latencies are derived from it).
const REQUESTS: u64 = 3;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The sidecar, `http://host:port`.
    #[arg(long)]
    url: String,
    /// Concurrent connections (one batch in flight on each).
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// How long to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The most batches over all connections.
    #[arg(long, default_value_t = 1_000_000)]
    max_batches: u64,
    /// Records per batch (at most 1024).
    #[arg(long, default_value_t = 1000)]
    records: u64,
    /// Tenants in the key space.
    #[arg(long, default_value_t = 100)]
    tenants: u64,
    /// Endpoints per tenant.
    #[arg(long, default_value_t = 20)]
    endpoints: u64,
    /// Sender of connection 0 (connection c is sender-base + c): a new base per run keeps
    /// every `(sender, seq)` new.
    #[arg(long, default_value_t = 1)]
    sender_base: u64,
    /// The first seq of every sender.
    #[arg(long, default_value_t = 1)]
    seq_base: u64,
    /// A Redis whose live usage keys (prefix `usage`) are summed before and after.
    #[arg(long)]
    redis: Option<String>,
    /// Processes (comma-separated PIDs) whose CPU time during the load (only) is reported.
    #[arg(long, value_delimiter = ',')]
    cpu_pids: Vec<u32>,
}

#[derive(Default)]
struct Tally {
    batches: u64,
    records: u64,
    applied: u64,
    duplicate: u64,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("usage_load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    if args.records == 0 || args.records > 1024 || args.tenants == 0 || args.endpoints == 0 {
        return Err("--records must be 1 to 1024; --tenants and --endpoints at least 1".into());
    }
    let date = utc_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    );
    let keys = args.tenants * args.endpoints;
    // Every key's record as JSON, in key order, then the whole key space twice over so that
    // any window of `records` consecutive keys is one slice.
    let pieces: Vec<String> = (0..keys)
        .map(|k| record_json(&args, &date, k))
        .collect::<Result<_, _>>()?;
    let before = match &args.redis {
        Some(url) => Some(redis_requests(url, &args, &date).await?),
        None => None,
    };
    let address = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must be http://host:port")?
        .trim_end_matches('/')
        .to_owned();
    let pieces = std::sync::Arc::new(pieces);
    let cpu_before = cpu_seconds(&args.cpu_pids)?;
    let own_before = cpu_seconds(&[std::process::id()])?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(args.max_batches));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (args, pieces, budget, address) = (
            args.clone(),
            pieces.clone(),
            budget.clone(),
            address.clone(),
        );
        tasks.push(tokio::spawn(async move {
            connection(c, &args, &pieces, &budget, &address, deadline).await
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        let one = task.await??;
        tally.batches += one.batches;
        tally.records += one.records;
        tally.applied += one.applied;
        tally.duplicate += one.duplicate;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = cpu_seconds(&args.cpu_pids)?
        .into_iter()
        .zip(cpu_before)
        .map(|(after, before)| after - before)
        .collect();
    let own: f64 = cpu_seconds(&[std::process::id()])?
        .into_iter()
        .zip(own_before)
        .map(|(after, before)| after - before)
        .sum();
    if tally.applied != tally.records || tally.duplicate != 0 {
        return Err(format!(
            "sent {} records, the sidecar applied {} and called {} duplicates",
            tally.records, tally.applied, tally.duplicate
        )
        .into());
    }
    let mut redis_delta = None;
    if let (Some(url), Some(before)) = (&args.redis, before) {
        let delta = redis_requests(url, &args, &date).await? - before;
        if delta != tally.applied * REQUESTS {
            return Err(format!(
                "Redis's requests grew by {delta}; {} records of {REQUESTS} requests were applied",
                tally.applied
            )
            .into());
        }
        redis_delta = Some(delta);
    }
    println!(
        "{}",
        serde_json::json!({
            "batches": tally.batches,
            "records": tally.records,
            "applied": tally.applied,
            "duplicate": tally.duplicate,
            "seconds": seconds,
            "records_per_s": tally.records as f64 / seconds,
            "redis_requests_delta": redis_delta,
            "keys": keys,
            "cpu_seconds": cpu,
            "own_cpu_seconds": own,
        })
    );
    Ok(())
}

/// The record of key `k` as JSON.
fn record_json(args: &Args, date: &str, k: u64) -> Result<String, serde_json::Error> {
    let (tenant, endpoint) = key_names(args, k);
    let mut record = UsageRecord::new(&tenant, Some("pro"), date, &endpoint);
    record.requests = REQUESTS;
    record.bytes_in = 120 * REQUESTS;
    record.bytes_out = 4_000 * REQUESTS + k % 1000;
    record.errors_4xx = u64::from(k.is_multiple_of(10));
    record.latency_ms_sum = 7 * REQUESTS + k % 50;
    record.latency_buckets[1] = REQUESTS - 1;
    if let Some(bucket) = record.latency_buckets.get_mut((k % 12) as usize) {
        *bucket += 1;
    }
    serde_json::to_string(&record)
}

fn key_names(args: &Args, k: u64) -> (String, String) {
    (
        format!("tenant-{:05}", k % args.tenants),
        format!("GET /api/e{:04}", k / args.tenants % args.endpoints),
    )
}

/// One connection's loop: batches back to back until the deadline or the budget is spent.
async fn connection(
    c: u64,
    args: &Args,
    pieces: &[String],
    budget: &std::sync::atomic::AtomicU64,
    address: &str,
    deadline: Instant,
) -> Result<Tally, Failure> {
    use std::sync::atomic::Ordering;
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let keys = pieces.len() as u64;
    let mut tally = Tally::default();
    let mut n = 0;
    while Instant::now() < deadline
        && budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    {
        let start = (n * args.connections + c) * args.records;
        let mut body = format!(
            "{{\"sender\":{},\"seq\":{},\"records\":[",
            args.sender_base + c,
            args.seq_base + n
        )
        .into_bytes();
        for i in 0..args.records {
            if i > 0 {
                body.push(b',');
            }
            let piece = pieces
                .get(((start + i) % keys) as usize)
                .ok_or("key out of range")?;
            body.extend_from_slice(piece.as_bytes());
        }
        body.extend_from_slice(b"]}");
        let request = Request::post(USAGE_PATH)
            .header("host", address)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&answer)).into());
        }
        let answer: UsageResponse = serde_json::from_slice(&answer)?;
        tally.batches += 1;
        tally.records += args.records;
        tally.applied += answer.applied;
        tally.duplicate += answer.duplicate;
        n += 1;
    }
    Ok(tally)
}

/// The sum of `requests` over every live key of the key space (HGET, pipelined by 1000).
async fn redis_requests(url: &str, args: &Args, date: &str) -> Result<u64, Failure> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys = args.tenants * args.endpoints;
    let mut sum = 0;
    let mut k = 0;
    while k < keys {
        let mut pipe = redis::pipe();
        for key in k..keys.min(k + 1000) {
            let (tenant, endpoint) = key_names(args, key);
            pipe.cmd("HGET")
                .arg(format!("usage:{{{tenant}}}:{date}:{endpoint}"))
                .arg("requests");
        }
        let values: Vec<Option<u64>> = pipe.query_async(&mut connection).await?;
        sum += values.into_iter().flatten().sum::<u64>();
        k += 1000;
    }
    Ok(sum)
}

/// `utime + stime` of each process, in seconds (`/proc/PID/stat`; Linux counts in 1/100 s).
fn cpu_seconds(pids: &[u32]) -> Result<Vec<f64>, Failure> {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let tick = |n: usize| -> Result<f64, Failure> {
                let value: u64 = fields.get(n).ok_or("short /proc stat")?.parse()?;
                Ok(value as f64 / 100.0)
            };
            Ok(tick(11)? + tick(12)?)
        })
        .collect()
}
