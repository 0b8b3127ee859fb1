//! Serving the API on a socket until SIGINT or SIGTERM.

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::storage::MemoryStore;
use crate::{AppState, app};

/// Binds `settings.listen` and serves until a shutdown signal, letting in-flight requests
/// finish.
pub async fn serve(settings: &Settings) -> std::io::Result<()> {
    if settings.redis_url.is_some() {
        tracing::warn!(
            "TOLLGATE_REDIS_URL is set but Redis counters are not supported yet: counters stay \
             in this process, so limits are exact only if every node uses this one sidecar"
        );
    }
    let state = AppState::new(MemoryStore::new(settings.max_buckets));
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
