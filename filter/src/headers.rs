//! RateLimit response headers in every style [`HeaderStyle`] names.
//!
//! OWNER: headers helper. Signatures are fixed (the host calls them); bodies and tests are yours.

use crate::policy::HeaderStyle;

/// What one rule reports about the current request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleStatus<'a> {
    /// The rule's name (policy name).
    pub name: &'a str,
    /// Its limit per window for this request's tenant.
    pub limit: u64,
    /// Permits left after this request.
    pub remaining: u64,
    /// Seconds until the quota is fully available again (rounded up).
    pub reset_secs: u64,
    /// The window in seconds.
    pub window_secs: u64,
}

/// Response headers to add: `(lower-case name, value)`.
pub type HeaderList = Vec<(&'static str, String)>;

/// Appends the headers of `style` for `rules` to `out`. Single-value styles describe the most
/// restrictive rule; list styles name every rule. `rules` may be empty (no header then).
pub fn render(style: HeaderStyle, rules: &[RuleStatus<'_>], out: &mut HeaderList) {
    let _ = (style, rules, out);
    todo!("headers helper")
}
