//! The registry feed the filter follows: `GET /v1/registry?since=<version>` →
//! [`tollgate_filter::registry::RegistryFeed`] ([`crate::services::registry::feed`] says what
//! it holds). Behind the node token when one is set ([`super::tokens::node_tokens`]).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tollgate_filter::registry::REGISTRY_PATH;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::services::registry::Registry;
use crate::storage::sql::Database;

/// What the feed route shares.
#[derive(Clone)]
pub struct FeedState {
    /// The registry.
    pub registry: Registry<Database>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
}

/// The feed route, with its state.
pub fn router(state: FeedState) -> Router {
    Router::new()
        .route(REGISTRY_PATH, get(feed))
        .with_state(state)
}

fn since(raw: Option<&str>) -> Result<u64, ApiError> {
    let mut since = 0;
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("since", value)) => {
                since = value.parse().map_err(|_| {
                    ApiError::InvalidParameter(format!(
                        "since: {value:?} is not a registry version (an integer, 0: everything)"
                    ))
                })?;
            }
            _ => {
                return Err(ApiError::InvalidParameter(
                    "this endpoint takes since=<version> only".into(),
                ));
            }
        }
    }
    Ok(since)
}

#[utoipa::path(get, path = "/v1/registry", tag = "filter",
    params(("since" = Option<u64>, Query, description = "the version the caller has; 0: everything")),
    responses((status = 200, description = "a RegistryFeed: changes after `since`, or everything (`full`)", body = Object),
              (status = 401, description = "no node token (when TOLLGATE_NODE_TOKEN is set)")),
    security(("node_token" = [])))]
pub(crate) async fn feed(State(state): State<FeedState>, RawQuery(raw): RawQuery) -> Response {
    let result = async {
        let since = since(raw.as_deref())?;
        Ok::<_, ApiError>(Json(state.registry.feed(since).await?).into_response())
    };
    result
        .await
        .unwrap_or_else(|error| super::fail(&state.metrics, error).into_response())
}
