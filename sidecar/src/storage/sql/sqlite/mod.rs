//! The SQLite side of every SQL storage trait: its SQL, and nothing else.

pub(crate) mod alerts;
pub(crate) mod query;
pub(crate) mod registry;
pub(crate) mod request_log;
pub(crate) mod sink;
pub(crate) mod summary;
