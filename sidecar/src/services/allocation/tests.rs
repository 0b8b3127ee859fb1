//! The allocation rule on a ledger, and its ledger in a real store.
#![allow(clippy::unwrap_used)]

use tollgate_filter::algorithm::{Algorithm, Quota, State};
use tollgate_filter::protocol::{SyncEntry, WireAlgorithm};

use super::{Claim, Lease, MAX_LEASES, RETAIN, allot, budget, grant, ledger_key};
use crate::storage::{CounterStore, MemoryStore, Write};

const NOW: u64 = 1_000_000_000_000;
const MS: u64 = 1_000_000;
const LEASE: u64 = 800 * MS;
const OPENING: u64 = 400 * MS;
/// Past the opening of a ledger opened at `NOW`, and past the lease of the worker that opened it.
const OPEN: u64 = NOW + LEASE + 1;

fn claim(sender: u64, applied: u64, demand: u64) -> Claim {
    Claim {
        sender,
        applied,
        demand,
        lease_ns: LEASE,
        opening_ns: OPENING,
    }
}

/// A ledger opened at `NOW` by a worker that asked for nothing since.
fn opened() -> State {
    let mut ledger = State::default();
    assert_eq!(allot(&mut ledger, &claim(0, 0, 1), 0, NOW).0, None);
    ledger
}

/// What a ledger last written at `at` asks of the store.
fn forgotten_after(at: u64) -> Write {
    Write::State {
        idle_at: at + RETAIN * LEASE + 1,
    }
}

#[test]
fn while_a_ledger_opens_nothing_is_granted_then_demand_shares_it() {
    let mut ledger = State::default();
    let (none, write) = allot(&mut ledger, &claim(1, 100, 5_000), 200, NOW);
    assert_eq!(none, None, "the worker keeps its starter share");
    assert_eq!(write, forgotten_after(NOW));
    assert_eq!(
        allot(&mut ledger, &claim(2, 100, 5_000), 100, NOW + OPENING).0,
        None
    );
    // Both asked alike: half each.
    let after = NOW + OPENING + 1;
    assert_eq!(
        allot(&mut ledger, &claim(1, 0, 5_000), 100, after).0,
        Some(50)
    );
    // Alone (the other one's lease ended), everything.
    let alone = NOW + OPENING + LEASE + 1;
    assert_eq!(
        allot(&mut ledger, &claim(1, 0, 5_000), 100, alone).0,
        Some(100)
    );
}

#[test]
fn grants_follow_demand_and_never_take_reserved_permits() {
    let mut ledger = opened();
    let (hot, _) = allot(&mut ledger, &claim(1, 0, 98), 200, OPEN);
    assert_eq!(hot, Some(200), "alone on the bucket");
    // A quiet worker finds everything reserved; then the hot one, renewing, shares by demand.
    assert_eq!(
        allot(&mut ledger, &claim(2, 0, 2), 200, OPEN + MS).0,
        Some(0)
    );
    let (again, _) = allot(&mut ledger, &claim(1, 50, 98), 150, OPEN + 2 * MS);
    assert_eq!(again, Some(147), "⌈150 · 98/100⌉");
    // Every grant together stays within the budget each was made of.
    let mut ledger = opened();
    let mut total = 0;
    for sender in 1..=6 {
        let (grant, _) = allot(&mut ledger, &claim(sender, 0, 1_000), 300, OPEN);
        total += grant.unwrap();
    }
    assert_eq!(total, 300);
}

#[test]
fn a_reservation_covers_the_previous_allowance_for_one_batch_only() {
    let mut ledger = opened();
    allot(&mut ledger, &claim(1, 0, 10), 100, OPEN);
    // Its next batch reports 30 of the 100 while another worker asks: the first worker may
    // still spend the other 70 of its previous allowance until its next batch.
    let (renewed, _) = allot(&mut ledger, &claim(1, 30, 10), 70, OPEN + MS);
    assert_eq!(renewed, Some(70));
    assert_eq!(
        allot(&mut ledger, &claim(2, 0, 1_000), 70, OPEN + 2 * MS).0,
        Some(0)
    );
    // Its next batch spent 10 more and asks little: it gets its small share (1), but the 60
    // its previous allowance left stay reserved until its next batch.
    let (small, _) = allot(&mut ledger, &claim(1, 10, 1), 60, OPEN + 3 * MS);
    assert_eq!(small, Some(1));
    let (other, _) = allot(&mut ledger, &claim(2, 0, 1_000), 60, OPEN + 4 * MS);
    assert_eq!(other, Some(0), "60 still reserved from the allowance of 70");
    let (last, _) = allot(&mut ledger, &claim(1, 0, 1), 60, OPEN + 5 * MS);
    assert_eq!(last, Some(1));
    let (freed, _) = allot(&mut ledger, &claim(2, 0, 1_000), 60, OPEN + 6 * MS);
    assert_eq!(freed, Some(59), "all but the quiet worker's one");
}

#[test]
fn a_lease_not_renewed_keeps_only_the_floor_then_is_forgotten() {
    let mut ledger = opened();
    allot(&mut ledger, &claim(1, 0, 1_000), 300, OPEN);
    assert_eq!(
        allot(&mut ledger, &claim(2, 0, 1_000), 300, OPEN + MS).0,
        Some(0)
    );
    let later = OPEN + LEASE + 1;
    let (after, write) = allot(&mut ledger, &claim(2, 0, 1_000), 300, later);
    assert_eq!(after, Some(299), "the quiet worker keeps one");
    assert_eq!(write, forgotten_after(later));
    let much_later = later + RETAIN * LEASE + 1;
    let (reopened, _) = allot(&mut ledger, &claim(3, 0, 1_000), 300, much_later);
    assert_eq!(reopened, None, "a forgotten ledger opens again");
    assert_eq!(ledger.log.len(), 5, "only the new lease is left");
}

#[test]
fn a_full_ledger_drops_the_oldest_lease() {
    let mut ledger = opened();
    for sender in 1..=MAX_LEASES as u64 {
        allot(&mut ledger, &claim(sender, 0, 1), 0, OPEN + sender);
    }
    allot(&mut ledger, &claim(9_999, 0, 1), 10, OPEN + 1_000);
    assert_eq!(ledger.log.len(), 5 * MAX_LEASES);
    assert!(!ledger.log.chunks(5).any(|line| line.first() == Some(&1)));
}

#[test]
fn refilling_buckets_budget_their_whole_refill_of_one_interval() {
    let quota = Quota::new(10, 1_000 * MS, 10, 0);
    // One token every 100 ms: a 200 ms interval refills 2.
    assert_eq!(budget(Algorithm::TokenBucket, &quota, 3, 200 * MS), 5);
    assert_eq!(budget(Algorithm::LeakyBucket, &quota, 0, 200 * MS), 2);
    assert_eq!(budget(Algorithm::FixedWindow, &quota, 3, 200 * MS), 3);
    assert_eq!(budget(Algorithm::SlidingWindowLog, &quota, 3, 200 * MS), 3);
    // 300 an hour: one token every 12 s, none in a 200 ms interval.
    let slow = Quota::new(300, 3_600_000 * MS, 300, 0);
    assert_eq!(budget(Algorithm::TokenBucket, &slow, 0, 200 * MS), 0);
}

#[tokio::test]
async fn the_ledger_lives_in_the_store_next_to_its_bucket() {
    let store = MemoryStore::new(100);
    let entry = SyncEntry {
        rule: "g".into(),
        key: 7,
        algorithm: WireAlgorithm::FixedWindow,
        limit: 300,
        window_ns: 3_600_000 * MS,
        burst: None,
        hits: 50,
        age_ns: 0,
        denied: 450,
    };
    let lease = |sender| Lease {
        sender,
        lease_ns: LEASE,
        interval_ns: 200 * MS,
    };
    assert_eq!(lease(1).opening(), OPENING);
    let (one, two) = (lease(1), lease(2));
    let first = grant(&store, &entry, &one, 50, 250, NOW).await.unwrap();
    assert_eq!(first, None);
    assert_eq!(
        grant(&store, &entry, &one, 0, 250, OPEN).await.unwrap(),
        Some(250)
    );
    assert_eq!(
        grant(&store, &entry, &two, 0, 250, OPEN).await.unwrap(),
        Some(0)
    );
    let key = ledger_key("g", 7);
    let read = |state: &mut State| (state.clone(), Write::Nothing);
    let ledger = store.update(&key, OPEN, read).await.unwrap();
    assert_eq!((ledger.words[0], ledger.log.len()), (NOW, 10));
    let gone = OPEN + RETAIN * LEASE + 1;
    assert_eq!(
        store.update(&key, gone, read).await.unwrap(),
        State::default()
    );
}
