//! Spending a grant's permits later than it was made (a worker's lease).

use super::{Algorithm, Grant, Quota};
use crate::Nanos;

/// The unspent part of a grant held by a worker: its permits may be spent up to and including
/// [`Grant::valid_until`] without the algorithm admitting more than it promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// When the grant was made (what [`super::Algorithm::refund`] needs).
    pub granted_at: Nanos,
    /// Permits not spent yet.
    pub left: u64,
    /// Tokens taken only to keep the leftover valid ([`Grant::held_back`]).
    pub held_back: u64,
    /// The last instant they may be spent at.
    pub valid_until: Nanos,
    /// Token bucket: the emission interval (0 for the window algorithms).
    pub period: Nanos,
    /// Token bucket: the theoretical arrival time implied by the permits spent from this lease
    /// at the instants they were spent (the bucket may not go below it when the lease is given
    /// back).
    pub floor: Nanos,
}

impl Lease {
    /// The lease of `grant` made at `now` by `algorithm`, of which `spent` permits are spent
    /// at once.
    pub fn of(algorithm: Algorithm, quota: &Quota, grant: &Grant, spent: u64, now: Nanos) -> Self {
        Lease {
            granted_at: now,
            left: grant.granted.saturating_sub(spent),
            held_back: grant.held_back,
            valid_until: grant.valid_until,
            period: algorithm.lease_period(quota),
            floor: 0,
        }
    }

    /// What giving the lease up at `now` returns to the bucket: the usable leftover and the
    /// held-back tokens.
    pub fn returnable(&self, now: Nanos) -> u64 {
        self.usable(now).saturating_add(self.held_back)
    }

    /// Permits that may still be spent at `now`.
    pub fn usable(&self, now: Nanos) -> u64 {
        if now <= self.valid_until {
            self.left
        } else {
            0
        }
    }

    /// Spends `cost` permits at `now` if that many are usable.
    pub fn spend(&mut self, cost: u64, now: Nanos) -> bool {
        let ok = self.usable(now) >= cost;
        if ok {
            self.left -= cost;
            self.floor = self
                .floor
                .max(now)
                .saturating_add(cost.saturating_mul(self.period));
        }
        ok
    }

    /// Takes back `cost` permits spent earlier (the request was refused elsewhere).
    pub fn give_back(&mut self, cost: u64) {
        self.left = self.left.saturating_add(cost);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn permits_stay_until_valid_until_inclusive() {
        let grant = Grant {
            granted: 5,
            valid_until: 999,
            ..Grant::default()
        };
        let quota = Quota::new(10, 1000, 10, 0);
        let mut lease = Lease::of(Algorithm::FixedWindow, &quota, &grant, 1, 0);
        assert!(lease.spend(3, 998));
        assert_eq!(lease.usable(999), 1);
        assert!(!lease.spend(2, 999));
        lease.give_back(2);
        assert_eq!(lease.usable(999), 3);
        assert_eq!(lease.usable(1000), 0);
    }
}
