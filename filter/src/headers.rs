//! RateLimit response headers in every style [`HeaderStyle`] names.
//!
//! Every value is written straight into one `String` per header with its capacity reserved up
//! front: no JSON, no intermediate values, nothing that can panic. The structured-field styles
//! produce valid RFC 9651 values whatever the input: integers are capped at the 15 digits an
//! sf-integer may hold, and a policy name outside sf-string's printable ASCII is escaped or
//! replaced (configured names never need it: they are `[A-Za-z0-9_.-]{1,64}`).
//!
//! ```
//! use tollgate_filter::headers::{render, HeaderList, RuleStatus};
//! use tollgate_filter::policy::HeaderStyle;
//!
//! let rules = [
//!     RuleStatus { name: "per-ip", limit: 600, remaining: 599, reset_secs: 1, window_secs: 60, partition: 1 },
//!     RuleStatus { name: "per-tenant", limit: 100, remaining: 99, reset_secs: 1, window_secs: 60, partition: 2 },
//! ];
//! let mut out = HeaderList::new();
//! render(HeaderStyle::Draft8, &rules, 1_700_000_000, &mut out);
//! assert_eq!(out, [
//!     ("ratelimit-policy", r#""per-ip";q=600;w=60, "per-tenant";q=100;w=60"#.to_string()),
//!     ("ratelimit", r#""per-ip";r=599;t=1, "per-tenant";r=99;t=1"#.to_string()),
//! ]);
//! ```

use core::fmt::Write as _;

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
    /// An opaque hash of the bucket key, never the key itself (which may hold an API key).
    /// Only the `ietf` style shows it, as the partition key `pk=:<base64 of the 8 big-endian
    /// bytes>:`.
    pub partition: u64,
}

/// Response headers to add: `(lower-case name, value)`.
pub type HeaderList = Vec<(&'static str, String)>;

/// The largest Integer a structured field can carry (RFC 9651 §3.3.1: at most 15 digits).
/// Larger values are written as this.
pub const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Digits of [`SF_INTEGER_MAX`]: the most one integer adds to a value.
const INT_LEN: usize = 15;

/// The quota unit every Tollgate policy counts in (draft-10 §3.1.2; also its default).
const QUOTA_UNIT: &str = "requests";

/// Appends the headers of `style` for `rules` to `out`. Single-value styles describe the most
/// restrictive rule (see [`most_restrictive`]); list styles name every rule. `rules` may be
/// empty (no header then). `now_unix_secs` is only read by the `legacy` style, whose
/// `x-ratelimit-reset` is a Unix timestamp (the GitHub / express-rate-limit convention); the
/// other styles send delta seconds.
pub fn render(
    style: HeaderStyle,
    rules: &[RuleStatus<'_>],
    now_unix_secs: u64,
    out: &mut HeaderList,
) {
    match style {
        HeaderStyle::None => {}
        HeaderStyle::Draft6 => {
            if let Some(rule) = most_restrictive(rules) {
                out.push(("ratelimit-limit", int(rule.limit)));
                out.push(("ratelimit-remaining", int(rule.remaining)));
                out.push(("ratelimit-reset", int(rule.reset_secs)));
                out.push(("ratelimit-policy", single_policy(rule)));
            }
        }
        HeaderStyle::Draft7 => {
            if let Some(rule) = most_restrictive(rules) {
                let mut value = String::with_capacity(3 * INT_LEN + 28);
                value.push_str("limit=");
                push_int(&mut value, rule.limit);
                value.push_str(", remaining=");
                push_int(&mut value, rule.remaining);
                value.push_str(", reset=");
                push_int(&mut value, rule.reset_secs);
                out.push(("ratelimit", value));
                out.push(("ratelimit-policy", single_policy(rule)));
            }
        }
        HeaderStyle::Draft8 | HeaderStyle::Ietf => {
            if !rules.is_empty() {
                let ietf = style == HeaderStyle::Ietf;
                out.push(("ratelimit-policy", policy_list(rules, ietf)));
                out.push(("ratelimit", limit_list(rules, ietf)));
            }
        }
        HeaderStyle::Legacy => {
            if let Some(rule) = most_restrictive(rules) {
                out.push(("x-ratelimit-limit", int(rule.limit)));
                out.push(("x-ratelimit-remaining", int(rule.remaining)));
                out.push((
                    "x-ratelimit-reset",
                    int(now_unix_secs.saturating_add(rule.reset_secs)),
                ));
            }
        }
    }
}

/// The rule closest to refusing: the lowest `remaining`; on a tie the one with the larger
/// `reset_secs` (it stays exhausted longer); on a further tie the first. `None` when `rules`
/// is empty.
pub fn most_restrictive<'r, 'a>(rules: &'r [RuleStatus<'a>]) -> Option<&'r RuleStatus<'a>> {
    let urgency = |r: &RuleStatus<'_>| (r.remaining, core::cmp::Reverse(r.reset_secs));
    rules.iter().reduce(|best, rule| {
        if urgency(rule) < urgency(best) {
            rule
        } else {
            best
        }
    })
}

/// Draft 6 and 7 `RateLimit-Policy`: `L;w=W`, a List of one Integer Item with the window as
/// parameter. Only the most restrictive rule: those drafts forbid two policies with the same
/// quota value in one field, which several rules may well have.
fn single_policy(rule: &RuleStatus<'_>) -> String {
    let mut value = String::with_capacity(2 * INT_LEN + 3);
    push_int(&mut value, rule.limit);
    push_window(&mut value, rule.window_secs);
    value
}

/// `RateLimit-Policy` of draft 8 and draft 10: a List of sf-string Items, one per rule, with
/// the quota `q` and window `w` (draft-10 §3.1). `ietf` adds the quota unit `qu` (§3.1.2) and
/// the partition key `pk` (§3.1.4), in the order of the draft's own example (§3.2).
fn policy_list(rules: &[RuleStatus<'_>], ietf: bool) -> String {
    let per_rule = 2 * INT_LEN + 12 + if ietf { QUOTA_UNIT.len() + 27 } else { 0 };
    let mut value = String::with_capacity(capacity(rules, per_rule));
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            value.push_str(", ");
        }
        push_sf_string(&mut value, rule.name);
        value.push_str(";q=");
        push_int(&mut value, rule.limit);
        if ietf {
            value.push_str(";qu=\"");
            value.push_str(QUOTA_UNIT);
            value.push('"');
        }
        push_window(&mut value, rule.window_secs);
        if ietf {
            push_partition(&mut value, rule.partition);
        }
    }
    value
}

/// `RateLimit` of draft 8 and draft 10: a List of sf-string Items naming each policy, with the
/// remaining quota `r` and the seconds until more is available `t` (draft-10 §4.1). `ietf`
/// adds the partition key `pk` (§4.1.3), as in the draft's examples (§4.2).
fn limit_list(rules: &[RuleStatus<'_>], ietf: bool) -> String {
    let per_rule = 2 * INT_LEN + 9 + if ietf { 17 } else { 0 };
    let mut value = String::with_capacity(capacity(rules, per_rule));
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            value.push_str(", ");
        }
        push_sf_string(&mut value, rule.name);
        value.push_str(";r=");
        push_int(&mut value, rule.remaining);
        value.push_str(";t=");
        push_int(&mut value, rule.reset_secs);
        if ietf {
            push_partition(&mut value, rule.partition);
        }
    }
    value
}

/// Bytes a list value needs: each name, its quotes and `per_rule` more for parameters and the
/// separator.
fn capacity(rules: &[RuleStatus<'_>], per_rule: usize) -> usize {
    rules.iter().map(|r| r.name.len() + 2 + per_rule).sum()
}

/// A value holding just `v`.
fn int(v: u64) -> String {
    let mut value = String::with_capacity(INT_LEN);
    push_int(&mut value, v);
    value
}

/// Writes `v` as an sf-integer (capped at [`SF_INTEGER_MAX`]).
fn push_int(out: &mut String, v: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", v.min(SF_INTEGER_MAX));
}

/// Writes `;w=W`, omitted for a zero window (draft 10 requires a non-zero window and every
/// draft makes `w` optional).
fn push_window(out: &mut String, window_secs: u64) {
    if window_secs > 0 {
        out.push_str(";w=");
        push_int(out, window_secs);
    }
}

/// Writes `s` as an sf-string (RFC 9651 §3.3.3): `"` and `\` escaped, anything that is not
/// printable ASCII (which an sf-string cannot hold, and which must never reach a header)
/// replaced by `_`.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                ' '..='~' => out.push(c),
                _ => out.push('_'),
            }
        }
    }
    out.push('"');
}

/// Writes `;pk=:<base64>:`, the partition key as an sf-binary (RFC 9651 §3.3.5) of the
/// hash's 8 big-endian bytes: 12 base64 characters with padding.
fn push_partition(out: &mut String, partition: u64) {
    out.push_str(";pk=:");
    for chunk in partition.to_be_bytes().chunks(3) {
        let (group, symbols) = match *chunk {
            [a, b, c] => ([a, b, c], 4),
            [a, b] => ([a, b, 0], 3),
            [a] => ([a, 0, 0], 2),
            _ => continue,
        };
        let [a, b, c] = group;
        let bits = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        for i in 0..4u32 {
            if i < symbols {
                out.push(base64_symbol(bits >> (18 - 6 * i) & 0x3f));
            } else {
                out.push('=');
            }
        }
    }
    out.push(':');
}

/// The RFC 4648 §4 base64 symbol of the low six bits of `v`.
fn base64_symbol(v: u32) -> char {
    // Each arm keeps the sum within `u8` (v < 64).
    let byte = match v & 0x3f {
        v @ 0..=25 => b'A' + v as u8,
        v @ 26..=51 => b'a' + (v - 26) as u8,
        v @ 52..=61 => b'0' + (v - 52) as u8,
        62 => b'+',
        _ => b'/',
    };
    char::from(byte)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
