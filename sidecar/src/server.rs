//! Serving the API on a socket until SIGINT or SIGTERM.

use std::sync::Arc;

use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpSocket};

use crate::config::Settings;
use crate::jobs::{Jobs, alerts, flush, quota, request_log};
use crate::metrics::Metrics;
use crate::routes::admin::AdminState;
use crate::routes::dashboard::{DashboardSettings, DashboardState};
use crate::routes::registry::FeedState;
use crate::routes::tokens::{TokenSet, node_tokens};
use crate::routes::usage_query::QueryState;
use crate::services::dashboard::access::LinkSigner;
use crate::services::flush::{FlushError, FlushReport};
use crate::services::live_usage::LiveUsage;
use crate::services::registry::Registry;
use crate::storage::sql::Database;
use crate::storage::usage::{AnyUsageStore, MemoryUsageStore, RedisUsageStore};
use crate::storage::{CounterStore, MemoryStore, RedisStore, StoreError, redact_url};
use crate::tenants::Tenants;
use crate::{AppState, app, system_clock};

/// Binds `settings.listen` and serves until a shutdown signal, letting in-flight requests
/// finish. Counters live in Redis when `settings.redis_url` is set, else in this process.
/// Without a database there is no usage metering (see [`serve_with_database`]).
pub async fn serve(settings: &Settings) -> std::io::Result<()> {
    serve_with(settings, None).await
}

/// [`serve`] with usage metering: `POST /v1/usage` into the usage store ([`usage_store`]),
/// flushed into `database` every `settings.flush_interval` and once more on shutdown, and the
/// tenant usage API (`GET /v1/usage/…`) reading `database`, its tenants from
/// `settings.filter_config` (a bad file: an error before listening). With
/// `settings.request_log` on, the batches' request log entries are written into `database` by
/// [`request_log::start`]'s writer job, which writes what is queued on shutdown.
pub async fn serve_with_database(settings: &Settings, database: Database) -> std::io::Result<()> {
    serve_with(settings, Some(database)).await
}

/// The usage store `settings` ask for: Redis (or a Redis Cluster) when `redis_url` is set,
/// else in this process (at most `max_buckets` aggregates).
pub fn usage_store(settings: &Settings) -> Result<AnyUsageStore, StoreError> {
    Ok(match &settings.redis_url {
        Some(url) if settings.redis_cluster => {
            AnyUsageStore::Redis(RedisUsageStore::new_cluster(url)?)
        }
        Some(url) => AnyUsageStore::Redis(RedisUsageStore::new(url)?),
        None => AnyUsageStore::Memory(MemoryUsageStore::new(settings.max_buckets)),
    })
}

/// `tollgate-sidecar flush`: one flush of the Redis usage store into `database`. `None` when
/// usage is not in Redis (each serving sidecar flushes its own).
pub async fn flush_once(
    settings: &Settings,
    database: &Database,
) -> Result<Option<FlushReport>, FlushError> {
    match usage_store(settings)? {
        AnyUsageStore::Memory(_) => Ok(None),
        store => Ok(Some(
            crate::services::flush::flush(&store, database, system_clock()).await?,
        )),
    }
}

async fn serve_with(settings: &Settings, database: Option<Database>) -> std::io::Result<()> {
    match &settings.redis_url {
        Some(url) => {
            let store = if settings.redis_cluster {
                RedisStore::new_cluster(url)
            } else {
                RedisStore::new(url)
            }
            .map_err(std::io::Error::other)?;
            let metrics = Arc::new(Metrics::new());
            let store = store.with_latency(metrics.redis_seconds());
            let url = url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
            // Redis may come up after the sidecar: /readyz says 503 until it answers.
            match store.ping().await {
                Ok(()) => {
                    tracing::info!(redis = %url, cluster = settings.redis_cluster, "counters in Redis")
                }
                Err(error) => tracing::warn!(
                    redis = %url, %error,
                    "counters in Redis, which does not answer yet (retried on every request)"
                ),
            }
            run(settings, AppState::with_metrics(store, metrics), database).await
        }
        None => {
            tracing::info!(
                max_buckets = settings.max_buckets,
                "counters in this process (no TOLLGATE_REDIS_URL): exact only if every node \
                 uses this one sidecar"
            );
            run(
                settings,
                AppState::new(MemoryStore::new(settings.max_buckets)),
                database,
            )
            .await
        }
    }
}

async fn run<S: CounterStore>(
    settings: &Settings,
    state: AppState<S>,
    database: Option<Database>,
) -> std::io::Result<()> {
    if let Some(reason) = settings.exposure_error() {
        return Err(std::io::Error::other(reason));
    }
    let tenants = match &database {
        Some(_) => load_tenants(settings)?,
        None => None,
    };
    let nodes = TokenSet::parse(settings.node_token.as_deref());
    if nodes.is_empty() {
        tracing::warn!(
            "no TOLLGATE_NODE_TOKEN: the filter's routes are open to anyone who can reach this address"
        );
    }
    let listener = listen(settings.listen)?;
    tracing::info!(address = %listener.local_addr()?, "tollgate-sidecar listening");
    // Answers go out at once: without TCP_NODELAY a response written in two parts waits for
    // the proxy's delayed ACK (40 ms) on a kept-alive connection.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
        }
    });
    let Some(database) = database else {
        axum::serve(listener, node_tokens(app(state), nodes))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        tracing::info!("tollgate-sidecar stopped");
        return Ok(());
    };
    let usage = crate::wal::open_store(settings, &database, &state.metrics).await?;
    let mut jobs = Jobs::new(Arc::clone(&state.metrics), state.clock);
    flush::start(
        &mut jobs,
        Arc::clone(&usage),
        database.clone(),
        settings.flush_interval,
        state.clock,
    );
    let log = request_log::start(
        &mut jobs,
        settings.request_log(),
        database.clone(),
        Arc::clone(&state.metrics),
        state.clock,
    );
    let registry = Registry::new(Arc::new(database.clone()), state.clock);
    // Usage as it is now (flushed + not yet flushed), for the usage API and the quota job.
    let live = LiveUsage::new(database.clone(), Arc::clone(&usage));
    let queries = QueryState::new(
        database.clone(),
        tenants,
        settings.admin_token.as_deref(),
        Arc::clone(&state.metrics),
        state.clock,
    )
    .with_registry(registry.clone())
    .with_live(live.clone());
    quota::start(
        &mut jobs,
        registry.clone(),
        Arc::new(live.clone()),
        settings.quota_interval,
    );
    // Alerts read usage as it is now too (flushed + not yet flushed).
    let (evaluator, deliverer) = alerts::parts(
        settings,
        Arc::new(database.clone()),
        Arc::new(live.clone()),
        Arc::clone(&state.metrics),
    )
    .map_err(std::io::Error::other)?;
    alerts::start(&mut jobs, evaluator, deliverer, settings.alert_interval);
    crate::jobs::billing::start(
        &mut jobs,
        Arc::new(database.clone()),
        crate::commands::billing::client(settings),
        crate::commands::billing::send_settings(settings),
        settings.billing_interval,
        &state.metrics,
        state.clock,
    );
    crate::jobs::billing::start_periods(
        &mut jobs,
        Arc::new(database.clone()),
        crate::commands::billing::client(settings).ok(),
        settings.stripe_rate,
        settings.billing_concurrency,
        settings.billing_close_interval,
        state.clock,
    );
    crate::jobs::billing::start_reconcile(
        &mut jobs,
        Arc::new(database.clone()),
        crate::commands::billing::client(settings).ok(),
        settings.billing_reconcile_interval,
        settings.billing_reconcile_settle,
        &state.metrics,
        state.clock,
    );
    let admin = AdminState {
        registry: registry.clone(),
        admin: TokenSet::parse(settings.admin_token.as_deref()),
        metrics: Arc::clone(&state.metrics),
    };
    // The dashboard shows usage as it is now too.
    let dashboard = dashboard_state(settings, live, &queries, &registry, &state.metrics)?;
    let feed = FeedState {
        registry,
        metrics: Arc::clone(&state.metrics),
    };
    let api = app(state
        .with_usage(usage)
        .with_request_log(log)
        .with_queries(queries)
        .with_jobs(jobs.board()))
    .merge(crate::routes::admin::router(admin))
    .merge(crate::routes::registry::router(feed))
    .merge(crate::routes::openapi::router())
    .merge(crate::routes::dashboard::router(dashboard));
    let api = node_tokens(api, nodes);
    let served = axum::serve(listener, api)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // No request is left: the request log writes what is queued, the flush flushes once more.
    jobs.stop().await;
    database.close().await;
    served?;
    tracing::info!("tollgate-sidecar stopped");
    Ok(())
}

/// The dashboard over `usage`, signing links with `TOLLGATE_DASHBOARD_SECRET` (unset: a
/// random secret, logged as a warning).
fn dashboard_state(
    settings: &Settings,
    usage: LiveUsage<Database>,
    queries: &QueryState,
    registry: &Registry<Database>,
    metrics: &Arc<Metrics>,
) -> std::io::Result<DashboardState<LiveUsage<Database>>> {
    let signer = match settings
        .dashboard_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(secret) => LinkSigner::new(secret.as_bytes()),
        None => {
            tracing::warn!(
                "no TOLLGATE_DASHBOARD_SECRET: dashboard links are signed with a random secret \
                 and stop working when this sidecar restarts"
            );
            LinkSigner::random()
        }
    }
    .map_err(std::io::Error::other)?;
    Ok(DashboardState {
        usage: Arc::new(usage),
        registry: registry.clone(),
        tenants: queries.tenants.clone(),
        admin: TokenSet::parse(settings.admin_token.as_deref()),
        signer,
        settings: DashboardSettings {
            link_ttl: settings.dashboard_link_ttl,
            session_ttl: settings.dashboard_session_ttl,
            refresh: settings.dashboard_refresh,
            secure_cookie: settings.dashboard_secure_cookie,
        },
        metrics: Arc::clone(metrics),
        clock: queries.clock,
    })
}

/// The connections the kernel may queue for `accept` (capped by `net.core.somaxconn`). A
/// proxy opens one connection per `strict` check on hosts without connection reuse
/// (ngx_wasm_module): with tokio's default of 1,024, a burst of 1,000 checks overflowed the
/// queue and the kernel reset connections the sidecar never saw.
pub const LISTEN_BACKLOG: u32 = 8_192;

/// A listener on `address` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `bind` sets).
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The usage API's tenants from `settings.filter_config` (a bad file: an error before
/// listening); `None` without one (only the admin token is served).
fn load_tenants(settings: &Settings) -> std::io::Result<Option<Tenants>> {
    let Some(path) = &settings.filter_config else {
        tracing::warn!(
            "no TOLLGATE_FILTER_CONFIG: the usage API (GET /v1/usage/...) serves the admin \
             token only"
        );
        return Ok(None);
    };
    let tenants = Tenants::load(path).map_err(std::io::Error::other)?;
    tracing::info!(
        filter_config = %path.display(),
        tenants = tenants.len(),
        api_keys = tenants.keys(),
        "usage API: tenants from the filter configuration"
    );
    Ok(Some(tenants))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
