//! The tenant of a JWT that the proxy verified. The filter never trusts a token by itself:
//! it reads the claims that the proxy's JWT filter (Envoy `jwt_authn` with
//! `payload_in_metadata`) left in the request's dynamic metadata after checking the
//! signature. A token that nothing verified leaves no metadata and so picks no tenant.

use super::host::Host;
use crate::policy::{Jwt, PlanId, Policy};

/// Claims of a verified token.
pub struct Verified {
    /// The tenant claim.
    pub tenant: Option<String>,
    /// The plan claim, when it names a known plan.
    pub plan: Option<PlanId>,
}

/// The verified token's tenant and plan, if the request carries one (call only when the
/// token's header is present: that saves a property read on every anonymous request).
pub fn verified(host: &mut impl Host, policy: &Policy) -> Option<Verified> {
    let config = policy.identity.jwt.as_ref()?;
    let tenant = claim(host, config, &config.tenant_claim)?;
    let plan = config
        .plan_claim
        .as_deref()
        .and_then(|c| claim(host, config, c))
        .and_then(|name| policy.plans.iter().position(|p| p.name == name));
    Some(Verified {
        tenant: Some(tenant),
        plan,
    })
}

/// Another claim of the verified payload (strings only).
pub fn claim(host: &mut impl Host, config: &Jwt, name: &str) -> Option<String> {
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
