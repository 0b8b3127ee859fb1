//! One contract test body per SQL storage trait, run against PostgreSQL and SQLite alike
//! (`super::tests`).

pub(super) mod alerts;
pub(super) mod billing;
pub(super) mod dashboard;
pub(super) mod query;
pub(super) mod registry;
pub(super) mod request_log;
pub(super) mod sink;
