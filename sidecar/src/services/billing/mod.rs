//! Stripe billing: usage of tenants on `billing: metered` plans reported to Stripe Billing
//! Meters exactly once ([`meter`]).
//!
//! The usage flush writes the meter events to send into the outbox table
//! (`billing_meter_events`) in the same transaction as its `api_usage_daily` upserts, so a
//! flush and its report are one fact. The sender ([`meter::send_pass`]) drains the outbox:
//! every row has a deterministic identifier (also its `Idempotency-Key`) and fixed parameters,
//! so any retry — after a timeout, a lost response or a crash — is either replayed by Stripe
//! or refused as "already exists", which counts as delivered. A row is only marked `sent`
//! after Stripe said so; a crash between Stripe's answer and that mark means one more
//! (harmless) attempt.

pub mod invoices;
pub mod meter;
pub mod overage;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// How the sender behaves (`TOLLGATE_BILLING_*`).
#[derive(Clone, Debug)]
pub struct SendSettings {
    /// The most Stripe calls per second, all customers together.
    pub rate_per_second: u32,
    /// How many (customer, meter) pairs are served at once (each one call at a time).
    pub concurrency: usize,
    /// Rows claimed per pass.
    pub batch: u32,
    /// How long a claim holds rows against other senders.
    pub lease: Duration,
    /// The first retry's delay; doubled per attempt (with jitter), at most [`MAX_BACKOFF`].
    pub retry_base: Duration,
}

impl Default for SendSettings {
    fn default() -> Self {
        SendSettings {
            rate_per_second: 100,
            concurrency: 32,
            batch: 1_000,
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
        }
    }
}

/// The longest wait between two attempts of a row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Unsent usage older than this raises `tollgate_billing_meter_events_stale` (Stripe refuses
/// events older than 35 days).
pub const STALE_AFTER_DAYS: i64 = 30;

/// Stripe refuses meter events whose timestamp is older than this.
pub const STRIPE_MAX_AGE_DAYS: i64 = 35;

/// A global pace: at most `rate` acquisitions per second, evenly spaced (one every
/// `1/rate` s, whoever asks).
#[derive(Clone)]
pub struct Pace {
    next: Arc<Mutex<Instant>>,
    gap: Duration,
}

impl Pace {
    /// `rate` per second (0 is taken as 1).
    pub fn new(rate: u32) -> Self {
        Pace {
            next: Arc::new(Mutex::new(Instant::now())),
            gap: Duration::from_secs(1) / rate.max(1),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            // No unused slots are saved up: never more than `rate` in any second.
            let at = (*next).max(Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The delay before attempt `attempts + 1`: `base · 2^attempts`, at most [`MAX_BACKOFF`],
/// jittered to between half and all of it, and never shorter than Stripe's `Retry-After`.
pub fn backoff(base: Duration, attempts: i64, retry_after: Option<Duration>) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let full = base.saturating_mul(1u32 << exponent).min(MAX_BACKOFF);
    let jitter = getrandom::u64().unwrap_or(0) % 1_000;
    let delay = full / 2 + full / 2 * u32::try_from(jitter).unwrap_or(0) / 1_000;
    retry_after.map_or(delay, |after| delay.max(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        for attempts in 0..6 {
            let full = base * (1 << attempts);
            let d = backoff(base, attempts, None);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
        assert!(backoff(base, 40, None) <= MAX_BACKOFF);
        assert!(backoff(base, 0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
