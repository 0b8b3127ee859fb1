//! The metrics' names, labels and values as rendered.

use super::*;

#[test]
fn counts_by_rule_outcome_and_error_kind() {
    let metrics = Metrics::new();
    metrics.decision("per-tenant", true);
    metrics.decision("per-tenant", true);
    metrics.decision("per-tenant", false);
    metrics.error("invalid_json");
    let text = metrics.render();
    assert!(
        text.contains(r#"tollgate_decisions_total{rule="per-tenant",outcome="admitted"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_decisions_total{rule="per-tenant",outcome="refused"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_errors_total{kind="invalid_json"} 1"#),
        "{text}"
    );
}

#[test]
fn sync_counters_the_nodes_gauge_and_the_redis_histogram() {
    let metrics = Metrics::new();
    let text = metrics.render();
    // Registered up front: they read 0 before the first batch.
    assert!(
        text.contains(r#"tollgate_sync_batches_total{outcome="duplicate"} 0"#),
        "{text}"
    );
    metrics.sync_applied(SyncCounts {
        entries: 3,
        hits: 25,
        expired: 1,
    });
    metrics.sync_applied(SyncCounts {
        entries: 1,
        hits: 5,
        expired: 0,
    });
    metrics.sync_duplicate();
    metrics.nodes(3);
    let latency = metrics.redis_seconds();
    latency.record(0.000_07);
    latency.record(0.002);
    latency.record(2.0);
    let text = metrics.render();
    for line in [
        r#"tollgate_sync_batches_total{outcome="applied"} 2"#,
        r#"tollgate_sync_batches_total{outcome="duplicate"} 1"#,
        "tollgate_sync_entries_total 4",
        "tollgate_sync_hits_total 30",
        "tollgate_sync_expired_total 1",
        "# TYPE tollgate_nodes gauge",
        "tollgate_nodes 3",
        "# TYPE tollgate_redis_seconds histogram",
        r#"tollgate_redis_seconds_bucket{le="0.00005"} 0"#,
        r#"tollgate_redis_seconds_bucket{le="0.0001"} 1"#,
        r#"tollgate_redis_seconds_bucket{le="0.0025"} 2"#,
        r#"tollgate_redis_seconds_bucket{le="0.1"} 2"#,
        r#"tollgate_redis_seconds_bucket{le="+Inf"} 3"#,
        "tollgate_redis_seconds_count 3",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn rule_labels_are_bounded() {
    let metrics = Metrics::new();
    for n in 0..MAX_RULE_LABELS + 5 {
        metrics.decision(&format!("rule-{n}"), true);
    }
    let text = metrics.render();
    assert!(
        text.contains(r#"tollgate_decisions_total{rule="_other",outcome="admitted"} 5"#),
        "{text}"
    );
    assert!(!text.contains(&format!("rule-{MAX_RULE_LABELS}\"")));
}
