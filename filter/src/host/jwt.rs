//! The tenant of a JWT that the proxy verified. The filter never trusts a token by itself:
//! it reads the claims that the proxy's JWT filter (Envoy `jwt_authn` with
//! `payload_in_metadata`) left in the request's dynamic metadata after checking the
//! signature. A token that nothing verified leaves no metadata and so picks no tenant.

use proxy_wasm::hostcalls;

use crate::policy::{Jwt, PlanId, Policy};

/// Claims of a verified token.
pub struct Verified<'a> {
    config: &'a Jwt,
    /// The tenant claim.
    pub tenant: Option<String>,
    /// The plan claim, when it names a known plan.
    pub plan: Option<PlanId>,
}

impl Verified<'_> {
    /// Another claim of the verified payload (strings only).
    pub fn claim(&self, name: &str) -> Option<String> {
        claim(self.config, name)
    }
}

/// The verified token's tenant and plan, if the request carries one (call only when the
/// token's header is present: that saves a property read on every anonymous request).
pub fn verified(policy: &Policy) -> Option<Verified<'_>> {
    let config = policy.identity.jwt.as_ref()?;
    let tenant = claim(config, &config.tenant_claim)?;
    let plan = config
        .plan_claim
        .as_deref()
        .and_then(|c| claim(config, c))
        .and_then(|name| policy.plans.iter().position(|p| p.name == name));
    Some(Verified {
        config,
        tenant: Some(tenant),
        plan,
    })
}

fn claim(config: &Jwt, name: &str) -> Option<String> {
    let path = vec![
        "metadata",
        "filter_metadata",
        config.metadata_namespace.as_str(),
        config.payload_key.as_str(),
        name,
    ];
    let bytes = hostcalls::get_property(path).ok().flatten()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}
