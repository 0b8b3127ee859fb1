//! Who may read what, and the query parameters: [`prepare`] authenticates the bearer
//! credential (admin token or API key, compared as SHA-256 hashes in constant time), parses
//! the parameters (400 naming the bad one) and decides which tenant the request reads.

use axum::http::{HeaderMap, header};
use tollgate_filter::usage::MAX_LABEL_LEN;

use super::{MAX_DAYS, MAX_LIMIT, MAX_TOP, QueryState};
use crate::error::ApiError;
use crate::routes::percent_decode;
use crate::tenants::{TenantInfo, hash, same_hash};

/// Who is asking.
enum Caller {
    Admin,
    Tenant(TenantInfo),
}

/// The tenant a request reads, and what the registry knows about it.
pub(super) struct Scope {
    pub(super) tenant: String,
    pub(super) info: Option<TenantInfo>,
}

async fn authenticate(state: &QueryState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    const MISSING: &str = "send Authorization: Bearer <API key> (or the admin token)";
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(MISSING))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized(MISSING))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::Unauthorized(MISSING)),
    };
    if token.is_empty() {
        return Err(ApiError::Unauthorized(MISSING));
    }
    let presented = hash(token);
    if state
        .admin_token
        .as_ref()
        .is_some_and(|admin| same_hash(admin, &presented))
    {
        return Ok(Caller::Admin);
    }
    if let Some(registry) = &state.registry
        && let Some(info) = registry.tenant_of_key(token).await?
    {
        return Ok(Caller::Tenant(info));
    }
    let tenants = state.tenants.as_ref().ok_or(ApiError::NoTenants)?;
    tenants
        .by_key(token)
        .cloned()
        .map(Caller::Tenant)
        .ok_or(ApiError::Unauthorized("unknown API key or admin token"))
}

async fn authorize(
    state: &QueryState,
    caller: Caller,
    asked: Option<String>,
) -> Result<Scope, ApiError> {
    match (caller, asked) {
        (Caller::Admin, Some(tenant)) => {
            let registered = match &state.registry {
                Some(registry) => registry.tenant_info(&tenant).await?,
                None => None,
            };
            Ok(Scope {
                info: registered.or_else(|| {
                    state
                        .tenants
                        .as_ref()
                        .and_then(|t| t.by_id(&tenant).cloned())
                }),
                tenant,
            })
        }
        (Caller::Admin, None) => Err(ApiError::InvalidParameter(
            "tenant: required with the admin token (?tenant=<id>)".into(),
        )),
        (Caller::Tenant(info), asked) => {
            if asked.is_some_and(|asked| asked != info.id) {
                return Err(ApiError::Forbidden(
                    "an API key reads its own tenant's usage only",
                ));
            }
            Ok(Scope {
                tenant: info.id.clone(),
                info: Some(info),
            })
        }
    }
}

/// The query parameters of one request.
#[derive(Default)]
pub(super) struct Params {
    pub(super) days: Option<u32>,
    pub(super) top: Option<usize>,
    pub(super) limit: Option<u32>,
    pub(super) tenant: Option<String>,
}

/// Parses `raw` allowing only `allowed` parameter names, each at most once.
fn params(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
    let mut out = Params::default();
    let bad = |message: String| ApiError::InvalidParameter(message);
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name =
            percent_decode(name).ok_or_else(|| bad("the query is not valid UTF-8".into()))?;
        let value = percent_decode(value)
            .ok_or_else(|| bad(format!("{name}: not valid percent-encoded UTF-8")))?;
        if !allowed.contains(&name.as_str()) {
            return Err(bad(format!(
                "{name}: unknown parameter (this endpoint takes {})",
                allowed.join(", ")
            )));
        }
        let repeated = || bad(format!("{name}: given more than once"));
        match name.as_str() {
            "days" => {
                let days = number(&name, &value, u64::from(MAX_DAYS))?;
                let days = u32::try_from(days).unwrap_or(MAX_DAYS);
                if out.days.replace(days).is_some() {
                    return Err(repeated());
                }
            }
            "top" => {
                let top = number(&name, &value, MAX_TOP as u64)? as usize;
                if out.top.replace(top).is_some() {
                    return Err(repeated());
                }
            }
            "limit" => {
                let limit = number(&name, &value, u64::from(MAX_LIMIT))?;
                let limit = u32::try_from(limit).unwrap_or(MAX_LIMIT);
                if out.limit.replace(limit).is_some() {
                    return Err(repeated());
                }
            }
            _ => {
                if value.is_empty() || value.len() > MAX_LABEL_LEN {
                    return Err(bad(format!(
                        "tenant: must be a tenant id of 1 to {MAX_LABEL_LEN} bytes"
                    )));
                }
                if out.tenant.replace(value).is_some() {
                    return Err(repeated());
                }
            }
        }
    }
    Ok(out)
}

fn number(name: &str, value: &str, max: u64) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n) && value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "{name}: {value:?} is not an integer from 1 to {max}"
            ))
        })
}

/// Authenticates, parses the parameters and authorizes the tenant.
pub(super) async fn prepare(
    state: &QueryState,
    headers: &HeaderMap,
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<(Scope, Params), ApiError> {
    let caller = authenticate(state, headers).await?;
    let mut params = params(raw, allowed)?;
    let scope = authorize(state, caller, params.tenant.take()).await?;
    Ok((scope, params))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_and_named() {
        let p = params(Some("days=7&tenant=acme%20co"), &["days", "tenant"]).unwrap();
        assert_eq!((p.days, p.tenant.as_deref()), (Some(7), Some("acme co")));
        for (raw, needle) in [
            ("days=0", "days: \"0\" is not an integer from 1 to 366"),
            ("days=367", "days: \"367\""),
            ("days=-1", "days: \"-1\""),
            ("days=+5", "days: \" 5\""),
            ("days=abc", "days: \"abc\""),
            ("days=1&days=2", "days: given more than once"),
            ("top=5", "top: unknown parameter"),
            ("tenant=", "tenant: must be a tenant id"),
            ("limit=5", "limit: unknown parameter"),
        ] {
            let error = params(Some(raw), &["days", "tenant"]).err().unwrap();
            assert!(error.to_string().contains(needle), "{raw}: {error}");
        }
        let p = params(Some("limit=1000"), &["limit"]).unwrap();
        assert_eq!(p.limit, Some(1_000));
        for raw in ["limit=0", "limit=1001", "limit=x"] {
            let error = params(Some(raw), &["limit"]).err().unwrap();
            assert!(
                error
                    .to_string()
                    .contains("is not an integer from 1 to 1000"),
                "{raw}: {error}"
            );
        }
    }
}
