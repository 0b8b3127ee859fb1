//! `identity`: where API keys and JWTs arrive, and what a JWT's claims say.

use super::{non_empty, ranged};
use crate::policy::check::{ConfigError, at, header_name};
use crate::policy::raw::{RawIdentity, RawJwt};
use crate::policy::serde_error::child;
use crate::policy::{Identity, Jwt};

/// Proxies in front of this one that may be trusted to append to `X-Forwarded-For`.
const MAX_XFF_HOPS: u64 = 10;
/// Where API keys arrive unless `identity.api_key_header` says otherwise.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

pub(super) fn identity(raw: Option<RawIdentity>) -> Result<Identity, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Identity {
            api_key_header: Some(DEFAULT_API_KEY_HEADER.into()),
            jwt: None,
            xff_trusted_hops: 0,
        });
    };
    let api_key_header = match raw.api_key_header {
        None => Some(DEFAULT_API_KEY_HEADER.to_owned()),
        Some(None) => None,
        Some(Some(name)) => Some(header_name("identity.api_key_header", &name)?),
    };
    let jwt = raw.jwt.map(|j| jwt(j.0)).transpose()?;
    let hops = raw
        .client_ip
        .and_then(|c| c.0.xff_trusted_hops)
        .unwrap_or(0);
    let hops = ranged(
        "identity.client_ip.xff_trusted_hops",
        hops,
        0,
        MAX_XFF_HOPS,
        ": how many proxies in front of this one append to X-Forwarded-For",
    )?;
    Ok(Identity {
        api_key_header,
        jwt,
        xff_trusted_hops: u32::try_from(hops).unwrap_or(0),
    })
}

fn jwt(raw: RawJwt) -> Result<Jwt, ConfigError> {
    let path = "identity.jwt";
    let header = header_name(
        &child(path, "header"),
        raw.header.as_deref().unwrap_or("authorization"),
    )?;
    let text = |field: &str, value: Option<String>, default: &str, hint: &str| {
        non_empty(
            child(path, field),
            value.unwrap_or_else(|| default.to_owned()),
            hint,
        )
    };
    let claims_header = raw
        .claims_header
        .map(|name| header_name(&child(path, "claims_header"), &name))
        .transpose()?;
    if claims_header.as_deref() == Some(header.as_str()) {
        return Err(at(
            child(path, "claims_header"),
            format!(
                "{header:?} is the token's own header, which nothing has verified (name the header your proxy's authentication step sets to the verified claims)"
            ),
        ));
    }
    Ok(Jwt {
        claims_header,
        header,
        tenant_claim: text(
            "tenant_claim",
            raw.tenant_claim,
            "tenant",
            "name the claim holding the tenant id",
        )?,
        plan_claim: raw
            .plan_claim
            .map(|claim| {
                non_empty(
                    child(path, "plan_claim"),
                    claim,
                    "name the claim holding the plan, or remove it",
                )
            })
            .transpose()?,
        metadata_namespace: text(
            "metadata_namespace",
            raw.metadata_namespace,
            "envoy.filters.http.jwt_authn",
            "remove it to use envoy.filters.http.jwt_authn",
        )?,
        payload_key: text(
            "payload_key",
            raw.payload_key,
            "jwt_payload",
            "remove it to use jwt_payload",
        )?,
    })
}
