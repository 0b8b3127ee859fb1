//! The allocation rule on a ledger, and its ledger in a real store.
#![allow(clippy::unwrap_used)]

use tollgate_filter::algorithm::{Algorithm, Quota, State};
use tollgate_filter::protocol::{SyncEntry, WireAlgorithm};

use super::{Claim, Lease, MAX_LEASES, RETAIN, allot, budget, grant, ledger_key, starter};
use crate::storage::{CounterStore, MemoryStore, Write};

const NOW: u64 = 1_000_000_000_000;
const MS: u64 = 1_000_000;
const LEASE: u64 = 700 * MS;

/// A claim of worker `sender` (its own node), no starter shares to reserve.
fn claim(sender: u64, applied: u64, demand: u64) -> Claim {
    Claim {
        sender,
        node: sender,
        applied,
        demand,
        lease_ns: LEASE,
        opening_ns: 400 * MS,
        nodes: 1,
        starter: 0,
    }
}

/// What a ledger last written at `at` asks of the store.
fn forgotten_after(at: u64) -> Write {
    Write::State {
        idle_at: at + RETAIN * LEASE + 1,
    }
}

#[test]
fn a_busy_worker_alone_gets_the_whole_budget_a_quiet_one_twice_its_demand() {
    let mut ledger = State::default();
    let (granted, write) = allot(&mut ledger, &claim(1, 0, 500), 300, NOW);
    assert_eq!(granted, 300);
    assert_eq!(write, forgotten_after(NOW));
    let (quiet, _) = allot(&mut State::default(), &claim(1, 0, 5), 300, NOW);
    assert_eq!(quiet, 10);
}

#[test]
fn grants_follow_demand_and_never_take_reserved_permits() {
    let mut ledger = State::default();
    // A hot worker (demand 98) and a quiet one (demand 2) share 200 permits.
    let (hot, _) = allot(&mut ledger, &claim(1, 0, 98), 200, NOW);
    assert_eq!(hot, 196, "twice its demand");
    let (quiet, _) = allot(&mut ledger, &claim(2, 0, 2), 200, NOW + MS);
    assert_eq!(quiet, 4, "what the hot worker's lease leaves");
    // The hot worker spent its grant: 200 - 196 = 4 left, all held by the quiet one.
    let (again, _) = allot(&mut ledger, &claim(1, 196, 300), 4, NOW + 2 * MS);
    assert_eq!(again, 0);
    // Every grant together stays within the budget each was made of.
    let mut ledger = State::default();
    let mut total = 0;
    for sender in 0..6 {
        total += allot(&mut ledger, &claim(sender, 0, 1_000), 300, NOW).0;
    }
    assert!(total <= 300, "{total}");
    assert!(total >= 250, "{total}: the budget is spread, not withheld");
}

#[test]
fn a_lease_not_renewed_keeps_only_the_floor_then_is_forgotten() {
    let mut ledger = State::default();
    allot(&mut ledger, &claim(1, 0, 1_000), 300, NOW);
    let (during, _) = allot(&mut ledger, &claim(2, 0, 1_000), 300, NOW + MS);
    assert_eq!(during, 0, "the first worker's lease reserves everything");
    let later = NOW + LEASE + 1;
    let (after, write) = allot(&mut ledger, &claim(2, 0, 1_000), 300, later);
    assert_eq!(after, 299, "the quiet worker keeps one");
    assert_eq!(write, forgotten_after(later));
    let much_later = later + RETAIN * LEASE + 1;
    let (all, _) = allot(&mut ledger, &claim(3, 0, 1_000), 300, much_later);
    assert_eq!(all, 300);
    assert_eq!(ledger.log.len(), 6, "only the new lease is left");
}

#[test]
fn a_reservation_outlives_its_batch_until_the_hits_arrive() {
    let mut ledger = State::default();
    allot(&mut ledger, &claim(1, 0, 100), 100, NOW);
    // The worker's next batch reports 30 of its 100 and asks little: it gets little, but may
    // still be spending the other 70 of its previous allowance, so they stay reserved.
    let (granted, _) = allot(&mut ledger, &claim(1, 30, 1), 70, NOW + MS);
    assert_eq!(granted, 2);
    let (other, _) = allot(&mut ledger, &claim(2, 0, 1), 70, NOW + 2 * MS);
    assert_eq!(other, 0);
}

#[test]
fn a_full_ledger_drops_the_oldest_lease() {
    let mut ledger = State::default();
    for sender in 0..MAX_LEASES as u64 {
        allot(&mut ledger, &claim(sender, 0, 1), 0, NOW + sender);
    }
    allot(&mut ledger, &claim(9_999, 0, 1), 10, NOW + 1_000);
    assert_eq!(ledger.log.len(), 6 * MAX_LEASES);
    assert!(!ledger.log.chunks(6).any(|line| line.first() == Some(&0)));
}

#[test]
fn refilling_buckets_budget_one_interval_of_refill() {
    let quota = Quota::new(10, 1_000 * MS, 10, 0);
    // One token every 100 ms: a 200 ms interval refills 2.
    assert_eq!(budget(Algorithm::TokenBucket, &quota, 3, 200 * MS), 5);
    assert_eq!(budget(Algorithm::LeakyBucket, &quota, 0, 200 * MS), 2);
    assert_eq!(budget(Algorithm::FixedWindow, &quota, 3, 200 * MS), 3);
    assert_eq!(budget(Algorithm::SlidingWindowLog, &quota, 3, 200 * MS), 3);
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
        node: 1,
        lease_ns: LEASE,
        interval_ns: 200 * MS,
    };
    // A starter share of 50, all reported: nothing to reserve for the opening.
    let quota = Quota::new(50, 3_600_000 * MS, 50, 0);
    let (one, two) = (lease(1), lease(2));
    let first = grant(&store, &entry, &quota, &one, 1, 50, 250, NOW);
    assert_eq!(first.await.unwrap(), 250);
    let second = grant(&store, &entry, &quota, &two, 1, 0, 250, NOW + MS);
    assert_eq!(second.await.unwrap(), 0);
    let key = ledger_key("g", 7);
    let read = |state: &mut State| (state.clone(), Write::Nothing);
    let ledger = store.update(&key, NOW + MS, read).await.unwrap();
    assert_eq!((ledger.words[0], ledger.log.len()), (NOW, 12));
    let gone = NOW + MS + RETAIN * LEASE + 1;
    assert_eq!(
        store.update(&key, gone, read).await.unwrap(),
        State::default()
    );
}

#[test]
fn a_slow_bucket_lends_no_refill_ahead() {
    // 300 an hour: one token every 12 s, none in a 200 ms interval.
    let quota = Quota::new(300, 3_600_000 * MS, 300, 0);
    assert_eq!(budget(Algorithm::TokenBucket, &quota, 0, 200 * MS), 0);
}

#[test]
fn starter_shares_are_a_fresh_bucket_of_the_node_quota() {
    let quota = Quota::new(300, 3_600_000 * MS, 30, 0);
    assert_eq!(starter(Algorithm::FixedWindow, &quota, 3), 100);
    assert_eq!(starter(Algorithm::TokenBucket, &quota, 3), 10);
    assert_eq!(starter(Algorithm::LeakyBucket, &quota, 3), 1);
    assert_eq!(starter(Algorithm::FixedWindow, &quota, 1), 300);
}

/// Three nodes of a 300 bucket: each may spend a starter share of 100 before its first sync.
fn opening(sender: u64, node: u64, applied: u64, demand: u64) -> Claim {
    Claim {
        node,
        nodes: 3,
        starter: 100,
        ..claim(sender, applied, demand)
    }
}

#[test]
fn while_a_bucket_opens_the_starter_shares_not_reported_are_reserved() {
    // Node 1 reported its 100 first: the other two nodes may be spending theirs.
    let mut ledger = State::default();
    let (first, _) = allot(&mut ledger, &opening(11, 1, 100, 5_000), 200, NOW);
    assert_eq!(first, 0);
    // Node 2 reports 100: node 3's 100 stays reserved.
    let (second, _) = allot(&mut ledger, &opening(21, 2, 100, 5_000), 100, NOW + 10 * MS);
    assert_eq!(second, 0);
    // Node 3 reported 60 of its 100 (its other worker may still spend 40).
    let (third, _) = allot(&mut ledger, &opening(31, 3, 60, 5_000), 40, NOW + 20 * MS);
    assert_eq!(third, 0);
    // After the opening, a node alone on the bucket gets what is left.
    let mut ledger = State::default();
    allot(&mut ledger, &opening(11, 1, 100, 5_000), 200, NOW);
    let (later, _) = allot(&mut ledger, &opening(11, 1, 0, 5_000), 200, NOW + 401 * MS);
    assert_eq!(later, 200);
}
