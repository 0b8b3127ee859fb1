//! Bodies of refusals: `429` (rate limited) and `503` (a `strict` rule's sidecar unreachable
//! under `failure_mode: closed`).
//!
//! OWNER: headers helper. Signatures are fixed (the host calls them); bodies and tests are yours.

use crate::policy::ErrorFormat;

/// A rule that refused the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// Its limit per window.
    pub limit: u64,
    /// The window in seconds.
    pub window_secs: u64,
    /// Seconds until its quota is fully available again.
    pub reset_secs: u64,
}

/// A refusal's `content-type` and body.
pub fn too_many_requests(format: ErrorFormat, retry_after_secs: u64, refused: &[Refusal<'_>]) -> (&'static str, String) {
    let _ = (format, retry_after_secs, refused);
    todo!("headers helper")
}

/// The body of the `503` a `strict` rule answers when the sidecar cannot decide and
/// `failure_mode` is `closed`.
pub fn unavailable(format: ErrorFormat, rule: &str) -> (&'static str, String) {
    let _ = (format, rule);
    todo!("headers helper")
}
