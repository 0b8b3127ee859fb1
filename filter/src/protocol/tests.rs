//! Unit tests of the wire protocol: round trips, validation, and how batches are cut.
#![allow(clippy::unwrap_used)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::algorithm::Grant;

fn request() -> CheckRequest {
    CheckRequest {
        rule: "per-tenant".into(),
        key: u64::MAX,
        algorithm: WireAlgorithm::TokenBucket,
        limit: 10,
        window_ns: 60_000_000_000,
        burst: Some(20),
        queue: 0,
        cost: 2,
        group: None,
    }
}

#[test]
fn check_request_round_trips() {
    let json = serde_json::to_string(&request()).unwrap();
    assert!(json.contains(r#""algorithm":"token_bucket""#), "{json}");
    assert_eq!(
        serde_json::from_str::<CheckRequest>(&json).unwrap(),
        request()
    );
    assert!(
        !json.contains("group"),
        "a lone check says nothing of groups: {json}"
    );
    let grouped = CheckRequest {
        group: Some(7),
        ..request()
    };
    let json = serde_json::to_string(&grouped).unwrap();
    assert_eq!(
        serde_json::from_str::<CheckRequest>(&json).unwrap(),
        grouped
    );
}

#[test]
fn batches_never_split_a_request() {
    let ids = |q: &u32| *q;
    assert_eq!(
        batch_end(&[1, 1, 2, 2, 2], 4, ids),
        2,
        "request 2 waits whole"
    );
    assert_eq!(batch_end(&[1, 1, 2, 2, 3], 4, ids), 4);
    assert_eq!(batch_end(&[1, 2], 4, ids), 2, "everything fits");
    assert_eq!(
        batch_end(&[5, 5, 5, 5, 5], 4, ids),
        4,
        "a group larger than a batch"
    );
    assert_eq!(batch_end::<u32>(&[], 4, ids), 0);
}

#[test]
fn check_response_round_trips() {
    let response = CheckResponse {
        admitted: false,
        remaining: 0,
        reset_after_ns: 5,
        retry_after_ns: 3,
        delay_ns: 0,
    };
    let json = serde_json::to_string(&response).unwrap();
    assert_eq!(
        serde_json::from_str::<CheckResponse>(&json).unwrap(),
        response
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let json =
        r#"{"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1,"colour":1}"#;
    let error = serde_json::from_str::<CheckRequest>(json).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `colour`"),
        "{error}"
    );
    let json = r#"{"admitted":true,"remaining":0,"reset_after_ns":0,"retry_after_ns":0,"delay_ns":0,"x":0}"#;
    assert!(serde_json::from_str::<CheckResponse>(json).is_err());
}

#[test]
fn algorithm_names_match_the_configuration() {
    let names = [
        ("fixed_window", Algorithm::FixedWindow),
        ("sliding_window_log", Algorithm::SlidingWindowLog),
        ("sliding_window_counter", Algorithm::SlidingWindowCounter),
        ("token_bucket", Algorithm::TokenBucket),
        ("leaky_bucket", Algorithm::LeakyBucket),
    ];
    for (name, algorithm) in names {
        let wire: WireAlgorithm = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(Algorithm::from(wire), algorithm);
        assert_eq!(WireAlgorithm::from(algorithm), wire);
    }
}

#[test]
fn defaults_and_validation() {
    let json = r#"{"rule":"r","key":1,"algorithm":"token_bucket","limit":7,"window_ns":9}"#;
    let request: CheckRequest = serde_json::from_str(json).unwrap();
    assert_eq!((request.cost, request.queue, request.burst), (1, 0, None));
    assert_eq!(request.quota().unwrap(), Quota::new(7, 9, 7, 0));
    let bad = [
        (
            CheckRequest {
                limit: 0,
                ..request.clone()
            },
            "limit: must be at least 1",
        ),
        (
            CheckRequest {
                window_ns: 0,
                ..request.clone()
            },
            "window_ns: must be at least 1",
        ),
        (
            CheckRequest {
                cost: 0,
                ..request.clone()
            },
            "cost: must be at least 1",
        ),
        (
            CheckRequest {
                burst: Some(0),
                ..request.clone()
            },
            "burst: must be at least 1",
        ),
        (
            CheckRequest {
                rule: String::new(),
                ..request.clone()
            },
            "rule: must be 1 to",
        ),
    ];
    for (request, message) in bad {
        let error = request.quota().unwrap_err().to_string();
        assert!(error.starts_with(message), "{error}");
    }
}

#[test]
fn response_times_are_relative_to_the_decision() {
    let grant = Grant {
        granted: 0,
        reset: 150,
        retry_at: 120,
        remaining: 0,
        ..Grant::default()
    };
    let response = CheckResponse::from_grant(&grant, 100);
    assert_eq!(
        (
            response.admitted,
            response.reset_after_ns,
            response.retry_after_ns
        ),
        (false, 50, 20)
    );
    // A grant in the past (clock moved back) never yields a negative wait.
    assert_eq!(CheckResponse::from_grant(&grant, 200).retry_after_ns, 0);
}

#[test]
fn sync_messages_round_trip_and_validate() {
    let json = r#"{"sender":1,"node":2,"seq":3,"entries":[{"rule":"per-tenant","key":9,
        "algorithm":"token_bucket","limit":100,"window_ns":60000000000,"burst":10,"hits":4,"age_ns":5}]}"#;
    let batch: SyncRequest = serde_json::from_str(json).unwrap();
    assert_eq!(batch.validate(), Ok(()));
    let entry = batch.entries.first().unwrap();
    assert_eq!(
        entry.quota().unwrap(),
        Quota::new(100, 60_000_000_000, 10, 0)
    );
    // An older filter's batch: no allowance asked, nothing denied.
    assert_eq!((batch.lease_ns, batch.interval_ns, entry.denied), (0, 0, 0));
    let again: SyncRequest = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
    assert_eq!(again, batch);
    let asking = SyncRequest {
        lease_ns: 700,
        interval_ns: 200,
        ..batch.clone()
    };
    let text = serde_json::to_string(&asking).unwrap();
    assert_eq!(serde_json::from_str::<SyncRequest>(&text).unwrap(), asking);

    let too_many = SyncRequest {
        entries: vec![entry.clone(); MAX_SYNC_ENTRIES + 1],
        ..batch.clone()
    };
    assert!(
        too_many
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("entries: at most")
    );
    let zero = SyncEntry {
        limit: 0,
        ..entry.clone()
    };
    assert_eq!(
        zero.quota().unwrap_err().to_string(),
        "limit: must be at least 1"
    );

    let response = SyncResponse {
        nodes: 3,
        duplicate: false,
        totals: vec![SyncTotal {
            remaining: 7,
            reset_after_ns: 8,
            allowance: None,
        }],
    };
    let text = serde_json::to_string(&response).unwrap();
    // Without allowances the answer is what older filters parse (no unknown field).
    assert!(!text.contains("allowance"), "{text}");
    assert_eq!(
        serde_json::from_str::<SyncResponse>(&text).unwrap(),
        response
    );
    let granted = SyncResponse {
        totals: vec![SyncTotal {
            allowance: Some(5),
            ..*response.totals.first().unwrap()
        }],
        ..response.clone()
    };
    let text = serde_json::to_string(&granted).unwrap();
    assert_eq!(
        serde_json::from_str::<SyncResponse>(&text).unwrap(),
        granted
    );
    assert!(
        serde_json::from_str::<SyncResponse>(r#"{"nodes":1,"duplicate":false,"totals":[],"x":1}"#)
            .is_err()
    );
}
