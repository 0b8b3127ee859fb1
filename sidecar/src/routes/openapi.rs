//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the admin API, the usage API and the
//! registry feed, generated from the handlers' annotations and the request types
//! ([`utoipa`]), never written by hand.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

/// The path the document is served at.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate sidecar", description = "The admin API (plans, tenants, API keys), \
          the tenant usage API and the registry feed the filter follows."),
    paths(
        super::admin::put_plan, super::admin::plan, super::admin::plans,
        super::admin::put_tenant, super::admin::tenant, super::admin::tenants,
        super::admin::delete_tenant,
        super::admin::keys::create, super::admin::keys::list, super::admin::keys::revoke,
        super::admin::keys::rotate, super::admin::alerts::list, super::registry::feed,
        super::usage_query::daily, super::usage_query::period, super::usage_query::endpoints,
        super::usage_query::users, super::usage_query::requests,
        super::dashboard::mint, super::dashboard::data, super::dashboard::admin_data,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearers),
)]
pub struct ApiDoc;

struct Bearers;

impl Modify for Bearers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_token", "TOLLGATE_ADMIN_TOKEN"),
            ("node_token", "one of TOLLGATE_NODE_TOKEN"),
            ("api_key", "a tenant's API key"),
        ] {
            let scheme = HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

/// The document's route.
pub fn router() -> Router {
    Router::new().route(OPENAPI_PATH, get(|| async { Json(ApiDoc::openapi()) }))
}
