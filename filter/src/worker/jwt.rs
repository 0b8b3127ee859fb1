//! The tenant of a JWT that the proxy verified. The filter never trusts a token by itself: it
//! reads the claims that the proxy's authentication step left after checking the signature —
//! in a header it sets (`identity.jwt.claims_header`: portable, e.g. Envoy `jwt_authn`
//! `forward_payload_header`, or an nginx auth step), or else in the request's dynamic
//! metadata (Envoy `jwt_authn` with `payload_in_metadata`). A token that nothing verified
//! leaves neither and so picks no tenant.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::facts::RequestHeaders;
use super::host::Host;
use crate::policy::{Jwt, PlanId, Policy};

/// Claims of a verified token.
pub struct Verified {
    /// The tenant claim.
    pub tenant: Option<String>,
    /// The plan claim, when it names a known plan.
    pub plan: Option<PlanId>,
    /// The payload from `claims_header`; `None`: claims are read from the metadata.
    payload: Option<Map<String, Value>>,
}

impl Verified {
    /// Another claim of the verified payload (strings only).
    pub fn claim(&self, host: &mut impl Host, config: &Jwt, name: &str) -> Option<String> {
        match &self.payload {
            Some(payload) => string(payload.get(name)?),
            None => metadata_claim(host, config, name),
        }
    }
}

/// The verified token's tenant and plan, if the request carries one (call only when the
/// token's header is present: that saves a property read on every anonymous request).
pub fn verified(
    host: &mut impl Host,
    policy: &Policy,
    headers: &RequestHeaders,
) -> Option<Verified> {
    let config = policy.identity.jwt.as_ref()?;
    let payload = match &config.claims_header {
        Some(name) => Some(decode(headers.get(name)?)?),
        None => None,
    };
    let mut verified = Verified {
        tenant: None,
        plan: None,
        payload,
    };
    verified.tenant = Some(verified.claim(host, config, &config.tenant_claim)?);
    verified.plan = config
        .plan_claim
        .as_deref()
        .and_then(|c| verified.claim(host, config, c))
        .and_then(|name| policy.plans.iter().position(|p| p.name == name));
    Some(verified)
}

/// A payload header: JSON, or base64url JSON (padded or not).
fn decode(value: &str) -> Option<Map<String, Value>> {
    let value = value.trim();
    let json = if value.starts_with('{') {
        value.as_bytes().to_vec()
    } else {
        let unpadded = value.trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(unpadded)
            .ok()?
    };
    match serde_json::from_slice(&json).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn string(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn metadata_claim(host: &mut impl Host, config: &Jwt, name: &str) -> Option<String> {
    let path = [
        "metadata",
        "filter_metadata",
        config.metadata_namespace.as_str(),
        config.payload_key.as_str(),
        name,
    ];
    let bytes = host.property(&path)?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn payload_headers_decode_as_json_or_base64url() {
        // {"tenant":"t-1","n":3} in base64url without padding, as jwt_authn forwards it.
        let encoded = "eyJ0ZW5hbnQiOiJ0LTEiLCJuIjozfQ";
        for value in [
            encoded,
            "eyJ0ZW5hbnQiOiJ0LTEiLCJuIjozfQ==",
            r#"{"tenant":"t-1","n":3}"#,
        ] {
            let map = decode(value).unwrap_or_default();
            assert_eq!(
                map.get("tenant").and_then(string).as_deref(),
                Some("t-1"),
                "{value}"
            );
            assert_eq!(
                map.get("n").and_then(string),
                None,
                "only strings are claims"
            );
        }
        assert!(decode("not base64!").is_none());
        assert!(decode("WzFd").is_none(), "[1] is not an object");
    }
}
