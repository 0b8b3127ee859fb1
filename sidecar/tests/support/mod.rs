//! Helpers shared by the integration tests (each test crate uses some of them).

pub mod api;
pub mod checks;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod sync;
pub mod tenants;
