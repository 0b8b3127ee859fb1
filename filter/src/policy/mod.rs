//! The filter's configuration: parsed from the plugin's JSON by serde ([`raw`]), then checked
//! and compiled ([`compile`]) into a [`Policy`] the request path can use without further
//! checks. Every mistake is reported as a [`ConfigError`] naming the field path and the fix.

mod check;
mod compile;
mod duration;
mod follow;
mod limit;
mod raw;
mod rule;
mod serde_error;
#[cfg(test)]
mod tests;

use hashbrown::HashMap;

use crate::Nanos;
use crate::algorithm::Algorithm;

pub use check::ConfigError;

/// Index of a plan in [`Policy::plans`].
pub type PlanId = usize;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Rules in configuration order.
    pub rules: Vec<Rule>,
    /// Plans; a [`PlanId`] indexes this list.
    pub plans: Vec<Plan>,
    /// The plan of a tenant whose token names no known plan (the plan named `free` unless
    /// `default_plan` says otherwise; `None` when there is no such plan).
    pub default_plan: Option<PlanId>,
    /// Static API keys → tenant.
    pub tenants: HashMap<String, Tenant>,
    /// Static API keys given as `sha256:<hex>` → tenant, by the key's SHA-256.
    pub hashed_tenants: HashMap<[u8; 32], Tenant>,
    /// Following the sidecar's registry of tenants, plans and keys (`None`: off; on by
    /// default when there is a sidecar).
    pub registry: Option<Registry>,
    /// What a request whose API key nothing knows gets.
    pub unknown_key: UnknownKey,
    /// How requests are identified.
    pub identity: Identity,
    /// Which RateLimit header style responses carry.
    pub headers: HeaderStyle,
    /// The body of a refusal.
    pub error_format: ErrorFormat,
    /// What `strict` rules do when the sidecar cannot answer.
    pub failure_mode: FailureMode,
    /// Where the sidecar is (absent: `global` and `strict` rules behave as with the sidecar gone).
    pub sidecar: Option<Sidecar>,
    /// How many shared-data slots the node-wide bucket table may use (bounds the proxy's memory
    /// whatever the number of distinct keys).
    pub state_slots: u32,
    /// Usage metering (`None`: off; on by default when there is a sidecar).
    pub usage: Option<Usage>,
    /// Keys the bucket and user hashes: from `key_secret`, else from the rules (see
    /// `compile::seed`). The same on every worker and every node with the same rules.
    pub seed: u64,
}

/// How the registry is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registry {
    /// How often each worker asks the sidecar for changes.
    pub interval_ms: u64,
}

/// What a request gets whose API key neither the registry nor the static map knows (or whose
/// key was revoked or expired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownKey {
    /// Served as if it had no key: only rules that do not need a tenant apply.
    #[default]
    Anonymous,
    /// Refused with `401` and `{"error": "invalid_api_key"}`.
    Reject,
}

/// How usage is sent to the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// How often each worker sends what it aggregated.
    pub interval_ms: u64,
    /// Whether each request is also sent one by one, for the detailed request log (off by
    /// default; when off it costs nothing per request).
    pub request_log: bool,
}

/// A plan and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Its name (`free`, `pro`, …).
    pub name: String,
    /// Requests per minute a tenant on this plan may make.
    pub requests_per_minute: u64,
    /// Token-bucket capacity of `"limit": "plan"` rules for this plan (`None`: the rule's own);
    /// only registry plans set it.
    pub burst: Option<u64>,
}

/// A tenant known from the static key map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's id.
    pub id: String,
    /// Its plan.
    pub plan: PlanId,
    /// Its Stripe customer, when billed.
    pub stripe_customer_id: Option<String>,
}

/// One rate-limit rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Its name: the policy name in headers, stats and refusals.
    pub name: String,
    /// The parts that make up the bucket key, in order.
    pub key: Vec<KeyPart>,
    /// Which requests it applies to.
    pub matcher: Match,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its limit per window.
    pub limit: LimitSpec,
    /// Window length.
    pub window: Nanos,
    /// Token bucket capacity (`None`: the limit).
    pub burst: Option<u64>,
    /// Leaky bucket queue length (0: refuse over-rate requests).
    pub queue: u64,
    /// Permits one request costs (default 1).
    pub cost: u64,
    /// Where the bucket lives.
    pub scope: Scope,
    /// Count and report, never refuse.
    pub shadow: bool,
}

/// One part of a rule's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address (downstream address, or from `X-Forwarded-For`).
    ClientIp,
    /// The tenant id (API key or verified JWT).
    Tenant,
    /// The tenant's plan name.
    Plan,
    /// The API key itself.
    ApiKey,
    /// The request path without the query.
    Path,
    /// The request method.
    Method,
    /// A request header, by lower-case name.
    Header(String),
    /// A claim of the verified JWT.
    Claim(String),
}

/// Which requests a rule applies to; every condition present must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// The path (without query) starts with this.
    pub path_prefix: Option<String>,
    /// The path (without query) is exactly this.
    pub path_exact: Option<String>,
    /// The method is one of these (upper case); empty: any method.
    pub methods: Vec<String>,
}

/// A rule's limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitSpec {
    /// The same for everyone.
    Fixed(u64),
    /// The tenant's plan `requests_per_minute`, scaled to the rule's window (at least 1).
    Plan,
    /// Per plan, with a default for plans not listed and for requests without a tenant.
    PerPlan {
        /// Indexed by [`PlanId`]; `None` where the plan is not listed.
        by_plan: Vec<Option<u64>>,
        /// For everything else.
        default: u64,
    },
}

/// Where a rule's bucket lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Per node (shared by the node's workers).
    Local,
    /// Across nodes, synchronised through the sidecar every `sync_interval_ms`.
    Global,
    /// One sidecar decision per request.
    Strict,
}

/// How requests are identified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Header carrying the API key (lower case).
    pub api_key_header: Option<String>,
    /// Tenant from a JWT verified by the proxy.
    pub jwt: Option<Jwt>,
    /// How many proxies in front of this one append to `X-Forwarded-For` and are trusted
    /// (0: use the downstream address).
    pub xff_trusted_hops: u32,
}

/// Where the verified JWT's claims are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwt {
    /// The header the token arrives in (lower case). A token there that nothing verified is
    /// never trusted.
    pub header: String,
    /// Claim naming the tenant.
    pub tenant_claim: String,
    /// Claim naming the plan.
    pub plan_claim: Option<String>,
    /// Dynamic metadata namespace where the proxy's JWT filter leaves the verified payload
    /// (Envoy `jwt_authn`: `envoy.filters.http.jwt_authn`).
    pub metadata_namespace: String,
    /// Key of the payload inside that namespace (`jwt_authn` `payload_in_metadata`).
    pub payload_key: String,
    /// A request header the proxy's authentication step sets to the verified token's payload
    /// (JSON, or base64url JSON as Envoy `jwt_authn` `forward_payload_header` writes it); when
    /// set, claims are read there instead of the dynamic metadata (which only Envoy has). The
    /// proxy must remove a copy the client sent: the filter trusts this header as it is.
    pub claims_header: Option<String>,
}

/// RateLimit header style.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `RateLimit-Limit`, `-Remaining`, `-Reset`, `RateLimit-Policy` (draft 6).
    #[default]
    Draft6,
    /// One `RateLimit: limit=, remaining=, reset=` dictionary + `RateLimit-Policy` (draft 7).
    Draft7,
    /// Lists: `RateLimit-Policy: "name";q=;w=` and `RateLimit: "name";r=;t=` (draft 8).
    Draft8,
    /// The newest IETF draft (draft 10): named policies with `q`, `w`, optional `qu`, `pk`.
    Ietf,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    Legacy,
    /// No headers.
    None,
}

/// The body of a refusal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorFormat {
    /// `{"error": "rate_limit_exceeded", "retryAfter": …, …}`
    #[default]
    Json,
    /// `application/problem+json`, the IETF quota-exceeded problem type.
    ProblemJson,
}

/// What `strict` rules do when the sidecar cannot answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Admit.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

/// How the filter reaches the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    /// Envoy cluster name (on ngx_wasm_module: `host:port`).
    pub cluster: String,
    /// `:authority` of calls to it.
    pub authority: String,
    /// How long a call may take.
    pub timeout_ms: u64,
    /// How often `global` deltas are sent.
    pub sync_interval_ms: u64,
    /// How many nodes share `global` limits, if configured: while the sidecar is gone each node
    /// limits a `global` rule to `limit / nodes` (unset: the node count the sidecar last
    /// reported).
    pub nodes: Option<u64>,
    /// The node token, sent as `Authorization: Bearer <token>` on every call to the sidecar.
    pub token: Option<String>,
}

impl Policy {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ConfigError> {
        compile::compile(bytes)
    }
}
