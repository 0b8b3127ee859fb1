//! What the routes call: the decisions, folds and jobs' work, apart from HTTP (no extractor,
//! no status code) and from storage (only through the [`crate::storage`] traits).

pub mod alerts;
pub mod allocation;
pub mod billing;
pub mod check;
pub mod checks;
pub mod dashboard;
pub mod flush;
pub mod live_usage;
pub mod registry;
pub mod request_log;
pub mod sync;
pub mod usage;
pub mod usage_query;
