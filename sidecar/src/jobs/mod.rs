//! Background jobs.

pub mod flush;
pub mod request_log;
