//! Bearer tokens: the admin token of the admin API ([`super::admin`]) and the node tokens
//! the filter's calls carry ([`node_tokens`]). Tokens are kept as SHA-256 hashes and compared
//! in constant time; never logged or echoed.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::tenants::{Hash, hash, same_hash};

/// The paths only the filter calls: they need a node token when some are set.
pub const NODE_PATHS: [&str; 6] = [
    "/v1/check",
    "/v1/checks",
    "/v1/sync",
    "/v1/usage",
    tollgate_filter::registry::REGISTRY_PATH,
    tollgate_filter::protocol::STATS_PATH,
];

/// The bearer token of `headers`, if any (empty: none).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim()).filter(|t| !t.is_empty())
        }
        _ => None,
    }
}

/// Accepted tokens, hashed.
#[derive(Clone, Debug, Default)]
pub struct TokenSet(Arc<Vec<Hash>>);

impl TokenSet {
    /// The comma-separated tokens of `list` (blank ones ignored).
    pub fn parse(list: Option<&str>) -> TokenSet {
        let hashes = list
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(hash)
            .collect();
        TokenSet(Arc::new(hashes))
    }

    /// Whether no token is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `headers` carry one of the tokens (every one compared, in constant time).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = bearer(headers).map(hash) else {
            return false;
        };
        self.0
            .iter()
            .fold(false, |found, token| found | same_hash(token, &presented))
    }
}

/// `router` with the filter's paths ([`NODE_PATHS`]) refused (401 `unauthorized`) unless they
/// carry one of `tokens`; without tokens, `router` unchanged (a loopback quick start).
pub fn node_tokens(router: Router, tokens: TokenSet) -> Router {
    if tokens.is_empty() {
        return router;
    }
    router.layer(middleware::from_fn_with_state(tokens, check_node))
}

async fn check_node(State(tokens): State<TokenSet>, request: Request, next: Next) -> Response {
    if NODE_PATHS.contains(&request.uri().path()) && !tokens.admits(request.headers()) {
        return ApiError::Unauthorized(
            "send Authorization: Bearer <node token> (one of TOLLGATE_NODE_TOKEN)",
        )
        .into_response();
    }
    next.run(request).await
}
