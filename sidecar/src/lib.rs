//! Tollgate's sidecar: the service next to the proxy that makes rate limits hold across every
//! node, using the filter crate's own algorithms and wire protocol. `strict` rules ask it once
//! per request (`POST /v1/check`, exact); `global` rules decide on each node and send what they
//! admitted in batches (`POST /v1/sync`), which the sidecar adds into the same buckets, exactly
//! once per batch, answering with the global totals and how many nodes share them. Usage
//! batches (`POST /v1/usage`, [`AppState::with_usage`]) are aggregated per tenant, day and
//! endpoint and flushed into the usage database exactly once ([`services::flush`]); their
//! optional per-request entries go into the detailed request log ([`jobs::request_log`],
//! `TOLLGATE_REQUEST_LOG`).
//!
//! # Layers
//!
//! ```text
//!   main.rs ── parse config, connect + migrate, serve ──> server.rs (stores, jobs, app())
//!
//!   routes/      one module per route group, each `router()`: parse, authorise, answer
//!      │           (errors: the one `error::ApiError`, stable codes, causes logged)
//!      ▼
//!   services/    decisions and folds (check, checks, sync), usage ingest, the flush,
//!      │           the usage API's answers; no HTTP, no SQL
//!      ▼
//!   storage/     traits + impls, all I/O:
//!                  CounterStore   memory | redis           (counters, sync batches)
//!                  usage::UsageStore memory | redis        (live usage aggregates)
//!                  sql::UsageSink, sql::UsageQueries,
//!                  sql::RequestLogStore,
//!                  sql::registry::RegistryStore postgres | sqlite (every SQL statement)
//!                  sql::alerts::AlertStore (the quota alerts' outbox)
//!                  sql::billing::{BillingStore, OverageStore, ReconcileStore}
//!                                    postgres | sqlite (Stripe outbox, invoices, reconciliation)
//!   stripe/      the typed Stripe client (reqwest) the billing services and jobs call
//!
//!   jobs/        background work, one way to start, stop on SIGTERM and report health
//!                (`/readyz`, `tollgate_job_*`): usage flush, request log writer,
//!                registry quota state, billing (meter events, closed periods,
//!                reconciliation);
//!                jobs call services and storage, never routes
//! ```
//!
//! Arrows only point down: `routes` use `services` and `storage`'s types, `services` use
//! `storage` traits, `storage` uses neither. Each storage trait has one contract test body
//! run against every impl (both databases for the SQL traits). New parts fit the same way: a
//! route group in `routes/`, its logic in `services/`, its tables behind a trait in
//! `storage/sql/`, its background work started on [`jobs::Jobs`].
//!
//! [`app`] builds the HTTP API over any [`CounterStore`] from an [`AppState`]; `main` only
//! parses the configuration and serves it. Tested without a socket:
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

pub mod commands;
pub mod config;
pub mod error;
pub mod html;
pub mod jobs;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod services;
pub mod storage;
pub mod stripe;
pub mod tenants;
pub mod wal;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tollgate_filter::Nanos;

use crate::jobs::JobBoard;
use crate::metrics::Metrics;
use crate::routes::usage_query::QueryState;
use crate::services::request_log::RequestLog;
use crate::services::usage::{Ingest, UsageIngest};
use crate::storage::CounterStore;
use crate::storage::usage::UsageStore;

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

/// What every handler shares, and which APIs [`app`] serves.
pub struct AppState<S> {
    /// The counters.
    pub store: Arc<S>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The clock decisions use.
    pub clock: Clock,
    /// Usage ingestion (`POST /v1/usage`, see [`with_usage`](Self::with_usage)); `None`: not
    /// served (404).
    pub usage: Option<Arc<dyn Ingest>>,
    /// Where the usage batches' request log entries go (by default nowhere: counted as
    /// `disabled`).
    pub request_log: RequestLog,
    /// The tenant usage API (`GET /v1/usage/…`, see [`with_queries`](Self::with_queries));
    /// `None`: not served (404).
    pub queries: Option<QueryState>,
    /// The background jobs' health (`/readyz`); by default none.
    pub jobs: JobBoard,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: Arc::clone(&self.store),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
            usage: self.usage.clone(),
            request_log: self.request_log.clone(),
            queries: self.queries.clone(),
            jobs: self.jobs.clone(),
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
            request_log: RequestLog::disabled(Arc::clone(&metrics)),
            metrics,
            clock: system_clock,
            usage: None,
            queries: None,
            jobs: JobBoard::default(),
        }
    }

    /// Serves usage metering (`POST /v1/usage`) into `usage`.
    pub fn with_usage<U: UsageStore>(mut self, usage: Arc<U>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Hands the usage batches' request log entries to `request_log`
    /// ([`jobs::request_log::start`], which should count into the same metrics).
    pub fn with_request_log(mut self, request_log: RequestLog) -> Self {
        self.request_log = request_log;
        self
    }

    /// Reports the health of the jobs on `board` in `/readyz` ([`jobs::Jobs::board`]).
    pub fn with_jobs(mut self, board: JobBoard) -> Self {
        self.jobs = board;
        self
    }

    /// Serves the tenant usage API (`GET /v1/usage/…`, [`routes::usage_query`]) over
    /// `queries` (its database, tenant registry and admin token).
    pub fn with_queries(mut self, queries: QueryState) -> Self {
        self.queries = Some(queries);
        self
    }
}

/// The sidecar's HTTP API: health, metrics and the counters' routes always; usage ingestion
/// and the usage API when `state` has them.
pub fn app<S: CounterStore>(state: AppState<S>) -> Router {
    let usage = state.usage.clone().map(|store| routes::usage::UsageState {
        usage: UsageIngest {
            store,
            request_log: state.request_log.clone(),
        },
        metrics: Arc::clone(&state.metrics),
        clock: state.clock,
    });
    let queries = state.queries.clone();
    let mut router = Router::new()
        .merge(routes::health::router())
        .merge(routes::metrics::router())
        .merge(routes::check::router())
        .merge(routes::checks::router())
        .merge(routes::sync::router())
        .merge(routes::stats::router())
        .fallback(routes::not_found::<S>)
        .method_not_allowed_fallback(routes::method_not_allowed::<S>)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    if let Some(usage) = usage {
        router = router.merge(routes::usage::router(usage));
    }
    if let Some(queries) = queries {
        router = router.merge(routes::usage_query::router(queries));
    }
    router
}
