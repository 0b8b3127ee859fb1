//! Tollgate's sidecar: the service next to the proxy that makes rate limits hold across every
//! node, using the filter crate's own algorithms and wire protocol. `strict` rules ask it once
//! per request (`POST /v1/check`, exact); `global` rules decide on each node and send what they
//! admitted in batches (`POST /v1/sync`), which the sidecar adds into the same buckets, exactly
//! once per batch, answering with the global totals and how many nodes share them. Usage
//! batches (`POST /v1/usage`, [`app_with_usage`]) are aggregated per tenant, day and endpoint
//! and flushed into the usage database exactly once ([`usage`]); their optional per-request
//! entries go into the detailed request log ([`usage::request_log`], `TOLLGATE_REQUEST_LOG`).
//!
//! [`app`] builds the HTTP API over any [`CounterStore`]; `main` only parses the
//! configuration and serves it. Tested without a socket:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//! use tollgate_sidecar::{AppState, app, storage::MemoryStore};
//!
//! let app = app(AppState::new(MemoryStore::new(1_000)));
//! let request = Request::post("/v1/check")
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1000000000}"#))
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

pub mod allocation;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod storage;
pub mod tenants;
pub mod usage;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tollgate_filter::Nanos;

use crate::metrics::Metrics;
use crate::storage::CounterStore;

/// The largest request body accepted (larger ones get 413 `payload_too_large`), except by
/// `POST /v1/sync` ([`MAX_SYNC_BODY_BYTES`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest `POST /v1/sync` body accepted: a batch of
/// [`MAX_SYNC_ENTRIES`](tollgate_filter::protocol::MAX_SYNC_ENTRIES) entries of about 200
/// bytes each, with room to spare.
pub const MAX_SYNC_BODY_BYTES: usize = 1024 * 1024;

/// The clock decisions read: Unix nanoseconds.
pub type Clock = fn() -> Nanos;

/// The system clock as Unix nanoseconds (0 before 1970, saturating in 2554).
pub fn system_clock() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// What every handler shares.
pub struct AppState<S> {
    /// The counters.
    pub store: Arc<S>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The clock decisions use.
    pub clock: Clock,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: Arc::clone(&self.store),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
        }
    }
}

impl<S: CounterStore> AppState<S> {
    /// State over `store` with fresh metrics and the system clock.
    pub fn new(store: S) -> Self {
        Self::with_metrics(store, Arc::new(Metrics::new()))
    }

    /// State over `store` with the system clock and `metrics`, which the store may already
    /// report to (e.g. [`storage::RedisStore::with_latency`]).
    pub fn with_metrics(store: S, metrics: Arc<Metrics>) -> Self {
        AppState {
            store: Arc::new(store),
            metrics,
            clock: system_clock,
        }
    }
}

/// The sidecar's HTTP API with usage metering (`POST /v1/usage`) into `usage`; request log
/// entries are not written (counted as `disabled`: see [`app_with_request_log`]).
pub fn app_with_usage<S: CounterStore, U: usage::UsageStore>(
    state: AppState<S>,
    usage: Arc<U>,
) -> Router {
    let log = usage::request_log::RequestLog::disabled(Arc::clone(&state.metrics));
    app_with_request_log(state, usage, log)
}

/// [`app_with_usage`] with the batches' request log entries handed to `request_log`
/// ([`usage::request_log::spawn`], which should count into `state.metrics`).
pub fn app_with_request_log<S: CounterStore, U: usage::UsageStore>(
    state: AppState<S>,
    usage: Arc<U>,
    request_log: usage::request_log::RequestLog,
) -> Router {
    let usage = routes::usage::UsageState {
        store: usage,
        metrics: Arc::clone(&state.metrics),
        clock: state.clock,
        request_log,
    };
    app(state).merge(routes::usage::router(usage))
}

/// [`app_with_usage`] plus the tenant usage API (`GET /v1/usage/…`, [`routes::usage_query`])
/// over `queries` (its database, tenant registry and admin token).
pub fn app_with_usage_queries<S: CounterStore, U: usage::UsageStore>(
    state: AppState<S>,
    usage: Arc<U>,
    queries: routes::usage_query::QueryState,
) -> Router {
    app_with_usage(state, usage).merge(routes::usage_query::router(queries))
}

/// [`app`] plus the tenant usage API only (no `POST /v1/usage` ingestion).
pub fn app_with_queries<S: CounterStore>(
    state: AppState<S>,
    queries: routes::usage_query::QueryState,
) -> Router {
    app(state).merge(routes::usage_query::router(queries))
}

/// The sidecar's HTTP API (without usage metering: see [`app_with_usage`]).
pub fn app<S: CounterStore>(state: AppState<S>) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::metrics::router())
        .merge(routes::check::router())
        .merge(routes::checks::router())
        .merge(routes::sync::router())
        .fallback(routes::not_found::<S>)
        .method_not_allowed_fallback(routes::method_not_allowed::<S>)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
