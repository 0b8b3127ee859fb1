//! Helpers shared by the integration tests (each test crate uses some of them).

pub mod api;
pub mod redis;
pub mod sync;
