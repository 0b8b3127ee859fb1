//! The five rate-limit algorithms, as pure functions of `(quota, state, now)`.
//!
//! Every algorithm works on a [`State`] that the caller stores (in the proxy: one shared-data
//! entry per key) and hands back on the next call; `now` is an argument, never read from a
//! clock. Nothing here allocates on the decision path except the sliding log, whose state is
//! its log. No function panics, overflows or misbehaves when the clock goes backwards (a
//! `now` earlier than a previous one is treated as that previous instant).
//!
//! A decision is an [`Algorithm::acquire`] of between `min` and `max` permits. The proxy asks
//! for one request's cost (`min == max == cost`) or, for algorithms where that keeps the
//! promise ([`Algorithm::leasable`]), leases a small batch that a worker then spends locally:
//! leased permits are already counted as admitted, so leasing never over-admits.

mod fixed_window;
mod leaky_bucket;
mod lease;
mod math;
mod sliding_counter;
mod sliding_log;
mod token_bucket;

use crate::Nanos;

pub use lease::Lease;

/// Which algorithm a rule uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Counts admissions per aligned window `[k·w, (k+1)·w)`.
    FixedWindow,
    /// Remembers the time of every admission in the last window.
    SlidingWindowLog,
    /// Weighs the previous window's count by how much of it still overlaps the sliding window.
    SlidingWindowCounter,
    /// A bucket of `burst` tokens refilled at `limit / window`.
    TokenBucket,
    /// A strict output rate of `limit / window`; with a `queue`, over-rate requests wait.
    LeakyBucket,
}

/// The numbers a decision needs, already resolved for one request (plan applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Permits per window (≥ 1).
    pub limit: u64,
    /// Window length in nanoseconds (≥ 1).
    pub window: Nanos,
    /// Token bucket capacity (≥ 1); the other algorithms ignore it.
    pub burst: u64,
    /// Leaky bucket: how many requests may wait for their turn instead of being refused.
    pub queue: u64,
}

impl Quota {
    /// A quota; zero limits, windows and bursts are raised to 1 so that no input can divide by zero.
    pub const fn new(limit: u64, window: Nanos, burst: u64, queue: u64) -> Self {
        Quota {
            limit: if limit == 0 { 1 } else { limit },
            window: if window == 0 { 1 } else { window },
            burst: if burst == 0 { 1 } else { burst },
            queue,
        }
    }
}

/// What one key remembers between decisions. `State::default()` is a key never seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Algorithm-specific words (e.g. window start and count, or a theoretical arrival time).
    pub words: [u64; 3],
    /// Sliding window log only: admission times, oldest first.
    pub log: Vec<Nanos>,
}

/// The answer to an [`Algorithm::acquire`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Permits granted: 0 (refused) or a number in `min..=max`.
    pub granted: u64,
    /// The last instant (inclusive) at which permits of this grant that the caller has not
    /// spent yet may still be spent without breaking the algorithm's promise (leases); see
    /// [`Lease`]. Equal to `now` for non-leasable algorithms.
    pub valid_until: Nanos,
    /// Token bucket leases: tokens taken besides `granted` to hold the bucket's refill back
    /// while the leftover may be spent; not spendable, handed back (with the unspent leftover)
    /// through [`Algorithm::refund`] when the lease is given up.
    pub held_back: u64,
    /// Permits still available right after this decision (for RateLimit-Remaining).
    pub remaining: u64,
    /// When the whole quota is available again if nothing more is admitted (RateLimit-Reset).
    pub reset: Nanos,
    /// When refused: the earliest time at which `min` permits could be granted (Retry-After).
    /// When granted: `now`.
    pub retry_at: Nanos,
    /// Leaky bucket with a queue: how long the admitted request must wait before it is
    /// forwarded (0 otherwise).
    pub delay: Nanos,
}

impl Algorithm {
    /// Whether a worker may lease a batch of permits and spend them locally until
    /// [`Grant::valid_until`] without the algorithm ever admitting more than it promises.
    pub const fn leasable(self) -> bool {
        matches!(
            self,
            Algorithm::FixedWindow | Algorithm::SlidingWindowCounter | Algorithm::TokenBucket
        )
    }

    /// Grants between `min` and `max` permits (as many as available, up to `max`), or none when
    /// fewer than `min` are available; updates `state` only when granting.
    pub fn acquire(
        self,
        quota: &Quota,
        state: &mut State,
        now: Nanos,
        min: u64,
        max: u64,
    ) -> Grant {
        match self {
            Algorithm::FixedWindow => fixed_window::acquire(quota, state, now, min, max),
            Algorithm::SlidingWindowLog => sliding_log::acquire(quota, state, now, min, max),
            Algorithm::SlidingWindowCounter => {
                sliding_counter::acquire(quota, state, now, min, max)
            }
            Algorithm::TokenBucket => token_bucket::acquire(quota, state, now, min, max),
            Algorithm::LeakyBucket => leaky_bucket::acquire(quota, state, now, min, max),
        }
    }

    /// [`Algorithm::acquire`] for a lease: a token bucket holds back at most `hold_back` tokens
    /// of refill to keep the leftover valid ([`Grant::held_back`]); the others ignore it.
    pub fn lease(
        self,
        quota: &Quota,
        state: &mut State,
        now: Nanos,
        min: u64,
        max: u64,
        hold_back: u64,
    ) -> Grant {
        match self {
            Algorithm::TokenBucket => token_bucket::lease(quota, state, now, min, max, hold_back),
            _ => self.acquire(quota, state, now, min, max),
        }
    }

    /// Permits that could be taken at `now` without waiting (a leaky bucket's queue is not
    /// counted). Reads `state` only.
    pub fn available(self, quota: &Quota, state: &State, now: Nanos) -> u64 {
        let quota = Quota { queue: 0, ..*quota };
        let grant = self.acquire(&quota, &mut state.clone(), now, 1, 1);
        if grant.granted == 0 {
            0
        } else {
            grant.remaining.saturating_add(1)
        }
    }

    /// Counts `permits` admitted elsewhere (other nodes of a `global` rule) as taken at `now`:
    /// as many of them as are available, never waiting in a queue. Returns how many were taken
    /// (fewer than `permits` when the bucket ran out: it is then simply empty).
    pub fn absorb(self, quota: &Quota, state: &mut State, now: Nanos, permits: u64) -> u64 {
        let take = permits.min(self.available(quota, state, now));
        if take == 0 {
            return 0;
        }
        let quota = Quota { queue: 0, ..*quota };
        self.acquire(&quota, state, now, take, take).granted
    }

    /// Gives back `permits` of a grant made at `granted_at` that will not be used (the request
    /// was refused by another rule), as if they had never been granted — as far as the
    /// algorithm can tell them apart from later grants.
    pub fn refund(
        self,
        quota: &Quota,
        state: &mut State,
        now: Nanos,
        granted_at: Nanos,
        permits: u64,
    ) {
        match self {
            Algorithm::FixedWindow => fixed_window::refund(quota, state, now, granted_at, permits),
            Algorithm::SlidingWindowLog => {
                sliding_log::refund(quota, state, now, granted_at, permits)
            }
            Algorithm::SlidingWindowCounter => {
                sliding_counter::refund(quota, state, now, granted_at, permits)
            }
            Algorithm::TokenBucket => token_bucket::refund(quota, state, now, granted_at, permits),
            Algorithm::LeakyBucket => leaky_bucket::refund(quota, state, now, granted_at, permits),
        }
    }

    /// How long one permit takes to come back: `⌈window / limit⌉` for the buckets (token and
    /// leaky), the window for the window algorithms.
    pub fn refill_period(self, quota: &Quota) -> Nanos {
        match self {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => math::period(quota),
            _ => quota.window,
        }
    }

    /// The interval at which a lease's late spending must be accounted (token bucket's `T`;
    /// 0 for the window algorithms, where any time inside the window is the same).
    pub fn lease_period(self, quota: &Quota) -> Nanos {
        match self {
            Algorithm::TokenBucket => math::period(quota),
            _ => 0,
        }
    }

    /// Gives a lease up at `now`: its usable leftover and held-back tokens go back to the
    /// bucket when that is exact (no grant since the lease's); a token bucket also accounts
    /// the permits spent late at the instants they were spent. Returns whether it could
    /// (false: another grant came since, the lease's tokens stay taken until they lapse).
    pub fn return_lease(self, quota: &Quota, state: &mut State, now: Nanos, lease: &Lease) -> bool {
        match self {
            Algorithm::TokenBucket => token_bucket::return_lease(quota, state, now, lease),
            _ => {
                self.refund(quota, state, now, lease.granted_at, lease.returnable(now));
                true
            }
        }
    }

    /// The instant from which `state` behaves exactly like `State::default()`: a key idle past
    /// it can be forgotten without changing any future decision.
    pub fn idle_at(self, quota: &Quota, state: &State) -> Nanos {
        match self {
            Algorithm::FixedWindow => fixed_window::idle_at(quota, state),
            Algorithm::SlidingWindowLog => sliding_log::idle_at(quota, state),
            Algorithm::SlidingWindowCounter => sliding_counter::idle_at(quota, state),
            Algorithm::TokenBucket => token_bucket::idle_at(quota, state),
            Algorithm::LeakyBucket => leaky_bucket::idle_at(quota, state),
        }
    }
}

impl State {
    /// Appends the state's bytes to `out` (little-endian words, then the log).
    pub fn encode(&self, out: &mut Vec<u8>) {
        for word in self.words {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for at in &self.log {
            out.extend_from_slice(&at.to_le_bytes());
        }
    }

    /// Reads what [`State::encode`] wrote; `None` for bytes that are not a state.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        if !bytes.len().is_multiple_of(8) || bytes.len() < 24 {
            return None;
        }
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_le_bytes).unwrap_or(0));
        let mut state = State::default();
        for word in state.words.iter_mut() {
            *word = words.next()?;
        }
        state.log = words.collect();
        Some(state)
    }
}
