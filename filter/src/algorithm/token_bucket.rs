//! OWNER: algorithms helper. Stub to be replaced.

use super::{Grant, Quota, State};
use crate::Nanos;

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    let _ = (quota, state, now, min, max);
    todo!()
}

pub(super) fn refund(quota: &Quota, state: &mut State, now: Nanos, granted_at: Nanos, permits: u64) {
    let _ = (quota, state, now, granted_at, permits);
    todo!()
}

pub(super) fn idle_at(quota: &Quota, state: &State) -> Nanos {
    let _ = (quota, state);
    todo!()
}
