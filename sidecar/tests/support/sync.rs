//! `POST /v1/sync` test bodies, run over every store: each takes a factory of fresh apps
//! (each with its own counters) deciding at [`NOW`].
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_filter::protocol::MAX_SYNC_ENTRIES;
use tollgate_sidecar::{MAX_BODY_BYTES, MAX_SYNC_BODY_BYTES};

use super::api::{HOUR, NOW, assert_error, get, post};

/// Time left in the fixed window holding [`NOW`].
pub const WINDOW_LEFT: u64 = HOUR - NOW % HOUR;

/// A fixed-window entry of the bucket `("per-tenant", 42)`, one hour, `limit`, `hits`.
pub fn entry(limit: u64, hits: u64) -> Value {
    json!({ "rule": "per-tenant", "key": 42, "algorithm": "fixed_window", "limit": limit,
        "window_ns": HOUR, "hits": hits })
}

/// A batch.
pub fn batch(sender: u64, seq: u64, node: u64, entries: Vec<Value>) -> Value {
    json!({ "sender": sender, "node": node, "seq": seq, "entries": entries })
}

/// Posts a batch; the status and the answer.
pub async fn sync(app: &Router, batch: &Value) -> (StatusCode, Value) {
    post(app, "/v1/sync", batch.to_string()).await
}

/// Posts a batch that must succeed; the answer.
pub async fn sync_ok(app: &Router, batch: &Value) -> Value {
    let (status, body) = sync(app, batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The `remaining` of the first total.
fn remaining(answer: &Value) -> u64 {
    answer["totals"][0]["remaining"].as_u64().unwrap()
}

/// Runs every body, each on a fresh app.
pub async fn all(new_app: impl Fn() -> Router) {
    applies_hits_once_and_answers_totals(&new_app()).await;
    senders_add_up(&new_app()).await;
    nodes_fill_a_global_bucket_together(&new_app()).await;
    expired_hits_are_not_applied(&new_app()).await;
    bad_batches_get_a_json_4xx_and_count_nothing(&new_app()).await;
    strict_checks_and_sync_share_the_bucket(&new_app()).await;
    concurrent_batches_add_up_exactly(&new_app()).await;
}

pub async fn applies_hits_once_and_answers_totals(app: &Router) {
    let bucket = json!({ "rule": "tb", "key": 1, "algorithm": "token_bucket", "limit": 10,
        "window_ns": HOUR, "burst": 5, "hits": 2, "age_ns": 1_000 });
    let first = batch(1, 1, 1, vec![entry(100, 30), bucket]);
    let answer = sync_ok(app, &first).await;
    let expected = json!({ "nodes": 1, "duplicate": false, "totals": [
        { "remaining": 70, "reset_after_ns": WINDOW_LEFT },
        // Two tokens of five taken as of their admission (age_ns = 1 µs ago): full again two
        // periods (of an hour / 10) after that.
        { "remaining": 3, "reset_after_ns": 2 * HOUR / 10 - 1_000 },
    ]});
    assert_eq!(answer, expected);
    // The same batch again (its first answer lost): nothing counted twice.
    let again = sync_ok(app, &first).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["totals"], expected["totals"], "{again}");
    // An older batch of the sender is a duplicate too.
    let older = sync_ok(app, &batch(1, 0, 1, vec![entry(100, 5)])).await;
    assert_eq!(
        (older["duplicate"].clone(), remaining(&older)),
        (json!(true), 70)
    );
    // Another sender only asking (hits 0) sees the same total.
    let ask = sync_ok(app, &batch(2, 1, 1, vec![entry(100, 0)])).await;
    assert_eq!(
        (ask["duplicate"].clone(), remaining(&ask)),
        (json!(false), 70)
    );
    let (_, metrics) = get(app, "/metrics").await;
    for line in [
        r#"tollgate_sync_batches_total{outcome="applied"} 2"#,
        r#"tollgate_sync_batches_total{outcome="duplicate"} 2"#,
        "tollgate_sync_entries_total 3",
        "tollgate_sync_hits_total 32",
        "tollgate_sync_expired_total 0",
        "tollgate_nodes 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

pub async fn senders_add_up(app: &Router) {
    assert_eq!(
        remaining(&sync_ok(app, &batch(1, 1, 1, vec![entry(100, 10)])).await),
        90
    );
    assert_eq!(
        remaining(&sync_ok(app, &batch(2, 1, 1, vec![entry(100, 15)])).await),
        75
    );
    assert_eq!(
        remaining(&sync_ok(app, &batch(1, 2, 1, vec![entry(100, 5)])).await),
        70
    );
    // Other buckets are untouched.
    let mut other = entry(100, 0);
    other["key"] = json!(43);
    assert_eq!(
        remaining(&sync_ok(app, &batch(3, 1, 1, vec![other])).await),
        100
    );
}

pub async fn nodes_fill_a_global_bucket_together(app: &Router) {
    let one = sync_ok(app, &batch(1, 1, 0xa, vec![entry(20, 12)])).await;
    assert_eq!((one["nodes"].as_u64(), remaining(&one)), (Some(1), 8));
    // Node 2 admitted 12 as well: the bucket is empty (hits beyond it are not carried over).
    let two = sync_ok(app, &batch(2, 1, 0xb, vec![entry(20, 12)])).await;
    let expected = json!({ "nodes": 2, "duplicate": false,
        "totals": [{ "remaining": 0, "reset_after_ns": WINDOW_LEFT }] });
    assert_eq!(two, expected);
    let (_, metrics) = get(app, "/metrics").await;
    assert!(metrics.contains("tollgate_nodes 2"), "{metrics}");
}

pub async fn expired_hits_are_not_applied(app: &Router) {
    let mut old = entry(100, 40);
    old["age_ns"] = json!(HOUR);
    let mut recent = entry(100, 10);
    recent["age_ns"] = json!(HOUR - 1);
    let answer = sync_ok(app, &batch(1, 1, 1, vec![old, recent])).await;
    let remainings: Vec<_> = answer["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|total| total["remaining"].as_u64().unwrap())
        .collect();
    // In order: the old hits are skipped (100), then the recent ones are taken (90).
    assert_eq!(remainings, [100, 90], "{answer}");
    let (_, metrics) = get(app, "/metrics").await;
    for line in [
        "tollgate_sync_expired_total 1",
        "tollgate_sync_hits_total 10",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

pub async fn bad_batches_get_a_json_4xx_and_count_nothing(app: &Router) {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let not_json = post(app, "/v1/sync", "{not json").await;
    assert_error(not_json, StatusCode::BAD_REQUEST, "invalid_json", "");
    let mut unknown = batch(1, 1, 1, vec![entry(100, 1)]);
    unknown["colour"] = json!("red");
    let unknown = sync(app, &unknown).await;
    assert_error(
        unknown,
        unprocessable,
        "invalid_request",
        "unknown field `colour`",
    );
    let mut unknown_in_entry = entry(100, 1);
    unknown_in_entry["cost"] = json!(1);
    let unknown_in_entry = sync(app, &batch(1, 1, 1, vec![unknown_in_entry])).await;
    assert_error(
        unknown_in_entry,
        unprocessable,
        "invalid_request",
        "unknown field `cost`",
    );
    let too_many = batch(1, 1, 1, vec![entry(100, 1); MAX_SYNC_ENTRIES + 1]);
    let too_many = sync(app, &too_many).await;
    assert_error(
        too_many,
        unprocessable,
        "invalid_request",
        "entries: at most 512",
    );
    // A bad entry refuses the whole batch, the good entries before it included.
    let zero = batch(1, 1, 1, vec![entry(100, 30), entry(0, 1)]);
    let zero = sync(app, &zero).await;
    assert_error(
        zero,
        unprocessable,
        "invalid_request",
        "entries[1].limit: must be at least 1",
    );
    let mut no_rule = entry(100, 1);
    no_rule["rule"] = json!("");
    let no_rule = sync(
        app,
        &batch(1, 1, 1, vec![entry(100, 1), entry(100, 1), no_rule]),
    )
    .await;
    assert_error(
        no_rule,
        unprocessable,
        "invalid_request",
        "entries[2].rule: must be 1 to",
    );
    let huge = format!(
        r#"{{"sender":1,"pad":"{}"}}"#,
        "x".repeat(MAX_SYNC_BODY_BYTES)
    );
    let huge = post(app, "/v1/sync", huge).await;
    assert_error(
        huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "1048576 bytes",
    );
    // Nothing of the refused batches was counted, nor their seq marked as applied.
    let fixed = sync_ok(app, &batch(1, 1, 1, vec![entry(100, 30), entry(100, 0)])).await;
    assert_eq!(fixed["duplicate"], false, "{fixed}");
    assert_eq!(remaining(&fixed), 70, "{fixed}");
    // A full batch is larger than /v1/check's body limit, and accepted.
    let mut long = entry(100, 0);
    long["rule"] = json!("r".repeat(128));
    let full = batch(2, 1, 1, vec![long; MAX_SYNC_ENTRIES]);
    assert!(full.to_string().len() > MAX_BODY_BYTES);
    let answer = sync_ok(app, &full).await;
    assert_eq!(answer["totals"].as_array().unwrap().len(), MAX_SYNC_ENTRIES);
    // /v1/check keeps its own limit.
    let big_check = format!(r#"{{"rule":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let big_check = post(app, "/v1/check", big_check).await;
    assert_error(
        big_check,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "65536 bytes",
    );
}

pub async fn strict_checks_and_sync_share_the_bucket(app: &Router) {
    let check = json!({ "rule": "per-tenant", "key": 42, "algorithm": "fixed_window",
        "limit": 100, "window_ns": HOUR })
    .to_string();
    assert_eq!(
        remaining(&sync_ok(app, &batch(1, 1, 1, vec![entry(100, 98)])).await),
        2
    );
    let (status, answer) = post(app, "/v1/check", check.clone()).await;
    assert_eq!(
        (
            status,
            answer["admitted"].clone(),
            answer["remaining"].clone()
        ),
        (StatusCode::OK, json!(true), json!(1))
    );
    assert_eq!(
        remaining(&sync_ok(app, &batch(1, 2, 1, vec![entry(100, 1)])).await),
        0
    );
    let (status, answer) = post(app, "/v1/check", check).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["admitted"], false, "{answer}");
    assert_eq!(answer["retry_after_ns"], WINDOW_LEFT, "{answer}");
}

pub async fn concurrent_batches_add_up_exactly(app: &Router) {
    const SENDERS: u64 = 8;
    let calls: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let app = app.clone();
            let batch = batch(sender, 1, sender % 2, vec![entry(100, 10)]);
            tokio::spawn(async move { sync_ok(&app, &batch).await })
        })
        .collect();
    let mut remainings = Vec::new();
    for call in calls {
        remainings.push(remaining(&call.await.unwrap()));
    }
    remainings.sort_unstable();
    // Each batch saw the ones before it and none twice.
    assert_eq!(remainings, [20, 30, 40, 50, 60, 70, 80, 90]);
    let ask = sync_ok(app, &batch(SENDERS, 1, 0, vec![entry(100, 0)])).await;
    assert_eq!(remaining(&ask), 20);
}
