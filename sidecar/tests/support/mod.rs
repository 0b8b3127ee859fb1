//! Helpers shared by the integration tests (each test crate uses some of them).

pub mod api;
pub mod checks;
pub mod sync;
pub mod tenants;

// Each test crate uses some of them.
#[allow(unused_imports)]
pub use tollgate_test_support::{postgres, process, redis, temp};
