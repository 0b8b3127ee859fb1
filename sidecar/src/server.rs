//! Serving the API on a socket until SIGINT or SIGTERM.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::storage::{CounterStore, MemoryStore, RedisStore, redact_url};
use crate::{AppState, app};

/// Binds `settings.listen` and serves until a shutdown signal, letting in-flight requests
/// finish. Counters live in Redis when `settings.redis_url` is set, else in this process.
pub async fn serve(settings: &Settings) -> std::io::Result<()> {
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
            run(settings, AppState::with_metrics(store, metrics)).await
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
            )
            .await
        }
    }
}

async fn run<S: CounterStore>(settings: &Settings, state: AppState<S>) -> std::io::Result<()> {
    let listener = TcpListener::bind(settings.listen).await?;
    tracing::info!(address = %listener.local_addr()?, "tollgate-sidecar listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("tollgate-sidecar stopped");
    Ok(())
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
