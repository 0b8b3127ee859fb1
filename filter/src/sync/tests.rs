#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::SECOND;
use crate::algorithm::{Algorithm, Quota};
use crate::protocol::SyncTotal;

const NOW: Nanos = 1_000 * SECOND;
const MS: Nanos = 1_000_000;

fn policy() -> Policy {
    Policy::from_json(
        br#"{"sidecar": {"cluster": "c", "timeout_ms": 100, "sync_interval_ms": 200},
             "rules": [{"name": "g", "key": ["tenant"], "algorithm": "fixed_window",
                        "limit": 600, "window": "1m", "scope": "global"}]}"#,
    )
    .unwrap()
}

fn ask(key: u64) -> Ask {
    Ask {
        key,
        algorithm: Algorithm::FixedWindow,
        quota: Quota::new(600, 60 * SECOND, 600, 0),
        cost: 1,
    }
}

fn totals(remaining: &[u64]) -> SyncResponse {
    SyncResponse {
        nodes: 3,
        duplicate: false,
        totals: remaining
            .iter()
            .map(|&remaining| SyncTotal {
                remaining,
                reset_after_ns: SECOND,
                allowance: None,
            })
            .collect(),
    }
}

#[test]
fn admissions_of_one_bucket_travel_as_one_entry() {
    let policy = policy();
    let mut sync = Sync::new(7, 9, NOW);
    sync.record(0, &ask(1), 1, NOW);
    sync.record(0, &ask(1), 2, NOW + MS);
    sync.record(0, &ask(2), 1, NOW + 2 * MS);
    let batch = sync.next_batch(&policy, NOW + 10 * MS).unwrap();
    assert_eq!((batch.sender, batch.node, batch.seq), (7, 9, 1));
    let mut entries = batch.entries.clone();
    entries.sort_by_key(|e| e.key);
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0].rule.as_str(), entries[0].hits), ("g", 3));
    assert_eq!(entries[0].age_ns, 10 * MS);
    assert_eq!((entries[1].hits, entries[1].limit), (1, 600));
    assert_eq!(sync.pending(), 0);
}

#[test]
fn one_batch_in_flight_and_a_failed_one_goes_again_unchanged() {
    let policy = policy();
    let mut sync = Sync::new(7, 9, NOW);
    sync.record(0, &ask(1), 5, NOW);
    let first = sync.next_batch(&policy, NOW).unwrap();
    // Admissions while the batch is out wait for the next one; no second batch meanwhile.
    sync.record(0, &ask(1), 2, NOW + MS);
    assert!(sync.next_batch(&policy, NOW + 2 * MS).is_none());
    sync.failed();
    let again = sync.next_batch(&policy, NOW + 300 * MS).unwrap();
    assert_eq!((again.seq, again.entries.len()), (first.seq, 1));
    assert_eq!(again.entries[0].hits, 5);
    assert_eq!(again.entries[0].age_ns, 300 * MS);
    // The answer folds the total less what was admitted since the batch left.
    let folds = sync.answered(&totals(&[100]), NOW + 301 * MS);
    assert_eq!(
        folds,
        vec![Fold {
            ask: ask(1),
            target: 98,
            allowance: None,
        }]
    );
    let next = sync.next_batch(&policy, NOW + 400 * MS).unwrap();
    assert_eq!((next.seq, next.entries[0].hits), (first.seq + 1, 2));
    assert_eq!(
        sync.stats,
        SyncStats {
            batches: 1,
            failures: 1,
            dropped: 0
        }
    );
}

#[test]
fn an_answer_that_does_not_match_the_batch_is_a_failure() {
    let policy = policy();
    let mut sync = Sync::new(7, 9, NOW);
    sync.record(0, &ask(1), 1, NOW);
    let first = sync.next_batch(&policy, NOW).unwrap();
    assert!(sync.answered(&totals(&[1, 2]), NOW).is_empty());
    assert_eq!(sync.stats.failures, 1);
    assert_eq!(sync.next_batch(&policy, NOW).unwrap(), first);
}

#[test]
fn heartbeats_and_big_tables_are_split_into_batches() {
    let policy = policy();
    let mut sync = Sync::new(7, 9, NOW);
    assert!(sync.next_batch(&policy, NOW).unwrap().entries.is_empty());
    sync.answered(&totals(&[]), NOW);
    for key in 0..(MAX_SYNC_ENTRIES as u64 + 10) {
        sync.record(0, &ask(key), 1, NOW);
    }
    assert_eq!(
        sync.next_batch(&policy, NOW).unwrap().entries.len(),
        MAX_SYNC_ENTRIES
    );
    sync.answered(&totals(&vec![600; MAX_SYNC_ENTRIES]), NOW);
    assert_eq!(sync.next_batch(&policy, NOW).unwrap().entries.len(), 10);
}

#[test]
fn a_full_table_counts_what_it_drops() {
    let mut sync = Sync::new(7, 9, NOW);
    for key in 0..MAX_PENDING as u64 {
        sync.record(0, &ask(key), 1, NOW);
    }
    sync.record(0, &ask(u64::MAX), 3, NOW);
    sync.record(0, &ask(0), 4, NOW); // a bucket already in the table still adds up
    assert_eq!(sync.stats.dropped, 3);
    assert_eq!(sync.pending(), MAX_PENDING);
}

#[test]
fn a_silent_sidecar_divides_global_limits_by_the_node_count() {
    let policy = policy();
    let sidecar = policy.sidecar.clone().unwrap();
    let stale = Sync::stale_after(&sidecar);
    assert_eq!(stale, 700 * MS);
    let mut sync = Sync::new(7, 9, NOW);
    assert_eq!(sync.share(&sidecar, NOW + stale), 1);
    // Never answered: no node count seen yet, so the node keeps the whole limit.
    assert_eq!(sync.share(&sidecar, NOW + stale + 1), 1);
    sync.next_batch(&policy, NOW).unwrap();
    sync.answered(&totals(&[]), NOW + SECOND);
    assert_eq!(sync.share(&sidecar, NOW + SECOND + stale), 1);
    assert_eq!(sync.share(&sidecar, NOW + SECOND + stale + 1), 3);
    let configured = Sidecar {
        nodes: Some(4),
        token: None,
        ..sidecar
    };
    assert_eq!(sync.share(&configured, NOW + SECOND + stale + 1), 4);
}

#[test]
fn bucket_totals_leave_room_for_one_interval_of_refill() {
    let interval = 200 * MS;
    // 100 a minute: one token every 600 ms, so a 200 ms lag is at most one token.
    let bucket = Ask {
        algorithm: Algorithm::TokenBucket,
        quota: Quota::new(100, 60 * SECOND, 10, 0),
        ..ask(1)
    };
    assert_eq!(refill_lag(&bucket, interval), 1);
    // 6000 a minute: one every 10 ms, 20 in an interval.
    let fast = Ask {
        quota: Quota::new(6000, 60 * SECOND, 10, 0),
        ..bucket
    };
    assert_eq!(refill_lag(&fast, interval), 20);
    assert_eq!(refill_lag(&ask(1), interval), 0);
}

#[test]
fn batches_ask_for_allowances_and_answers_bring_them_less_what_was_admitted_since() {
    let policy = policy();
    let mut sync = Sync::new(7, 9, NOW);
    sync.record(0, &ask(1), 5, NOW);
    sync.deny(0, &ask(1), 40, NOW + MS);
    sync.deny(0, &ask(2), 3, NOW + MS);
    let batch = sync.next_batch(&policy, NOW + 10 * MS).unwrap();
    assert_eq!((batch.lease_ns, batch.interval_ns), (700 * MS, 200 * MS));
    let mut entries = batch.entries.clone();
    entries.sort_by_key(|e| e.key);
    assert_eq!((entries[0].hits, entries[0].denied), (5, 40));
    assert_eq!((entries[1].hits, entries[1].denied), (0, 3));
    // Admitted while the batch is out: taken from the new allowance.
    sync.record(0, &ask(1), 4, NOW + 20 * MS);
    let mut answer = totals(&[500, 500]);
    for (total, entry) in answer.totals.iter_mut().zip(&batch.entries) {
        total.allowance = Some(if entry.key == 1 { 100 } else { 2 });
    }
    let folds = sync.answered(&answer, NOW + 30 * MS);
    let until = NOW + 10 * MS + 700 * MS;
    let of = |key| folds.iter().find(|f| f.ask.key == key).unwrap().allowance;
    assert_eq!(of(1), Some(Allowance { left: 96, until }));
    assert_eq!(of(2), Some(Allowance { left: 2, until }));
    assert_eq!(sync.nodes(policy.sidecar.as_ref().unwrap()), 3);
    // Starter shares divide by the nodes the sidecar sees, the configured count before that.
    let configured = Sidecar {
        nodes: Some(5),
        ..policy.sidecar.clone().unwrap()
    };
    assert_eq!(sync.nodes(&configured), 3);
    assert_eq!(Sync::new(1, 2, NOW).nodes(&configured), 5);
}

#[test]
fn decisions_record_admissions_or_the_global_rules_refusals() {
    use crate::decision::RuleResult;
    use crate::engine::Outcome;

    let policy = policy();
    let result = |admitted, refused, cached_only| RuleResult {
        rule: 0,
        ask: Ask {
            quota: Quota::new(200, 60 * SECOND, 200, 0),
            ..ask(1)
        },
        configured: ask(1).quota,
        outcome: Outcome {
            admitted,
            ..Outcome::default()
        },
        refused,
        cached_only,
        from_allowance: false,
    };
    let mut sync = Sync::new(7, 9, NOW);
    sync.record_decision(&policy, &[result(true, false, false)], true, NOW);
    // Refused by another rule: nothing; refused by this one: demand; a cached look: nothing.
    sync.record_decision(&policy, &[result(true, false, false)], false, NOW);
    sync.record_decision(&policy, &[result(false, true, false)], false, NOW);
    sync.record_decision(&policy, &[result(false, true, true)], false, NOW);
    let batch = sync.next_batch(&policy, NOW).unwrap();
    let entry = &batch.entries[0];
    assert_eq!((entry.hits, entry.denied, entry.limit), (1, 1, 600));
}
