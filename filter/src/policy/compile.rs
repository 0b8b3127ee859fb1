//! OWNER: policy helper. Stub to be replaced.

use super::Policy;

/// A configuration mistake: the field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Where, e.g. `rules[1].window`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

pub(super) fn compile(bytes: &[u8]) -> Result<Policy, ConfigError> {
    let _ = bytes;
    todo!()
}
