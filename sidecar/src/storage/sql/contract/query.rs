//! [`UsageQueries`]' contract: a tenant's rows between two dates, both included, by date and
//! endpoint, nobody else's; active users per day, days without a row absent.

use crate::storage::sql::query::Counts;
use crate::storage::sql::{Database, UsageQueries, UsageSink};
use crate::storage::usage::{Counters, Snapshot, UsageRow};

fn row(date: &str, endpoint: &str, requests: u64) -> UsageRow {
    let mut counters = Counters {
        requests,
        bytes_in: 2 * requests,
        bytes_out: 3 * requests,
        errors_4xx: 1,
        errors_5xx: 0,
        latency_ms_sum: 10 * requests,
        ..Counters::default()
    };
    counters.latency_buckets[2] = requests;
    UsageRow {
        date: date.into(),
        endpoint: endpoint.into(),
        plan: "pro".into(),
        counters,
    }
}

/// Two tenants' usage on a few days.
async fn fill(database: &Database) {
    let acme = Snapshot {
        tenant: "acme".into(),
        flush_id: "q1".into(),
        rows: vec![
            row("2026-11-24", "GET /a", 1),
            row("2026-11-25", "GET /b", 2),
            row("2026-11-25", "GET /a", 3),
            row("2026-11-27", "GET /a", 4),
        ],
        users: vec![("2026-11-25".into(), 7), ("2026-11-27".into(), 2)],
    };
    let globex = Snapshot {
        tenant: "globex".into(),
        flush_id: "q2".into(),
        rows: vec![row("2026-11-25", "GET /a", 100)],
        users: vec![("2026-11-25".into(), 50)],
    };
    database.apply(&acme).await.unwrap();
    database.apply(&globex).await.unwrap();
}

pub(in crate::storage::sql) async fn reads_one_tenant_between_two_dates(database: &Database) {
    fill(database).await;
    let rows = database
        .daily_rows("acme", "2026-11-25", "2026-11-27")
        .await
        .unwrap();
    let read: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| (r.date.as_str(), r.endpoint.as_str(), r.counts.requests))
        .collect();
    assert_eq!(
        read,
        [
            ("2026-11-25", "GET /a", 3),
            ("2026-11-25", "GET /b", 2),
            ("2026-11-27", "GET /a", 4)
        ]
    );
    let mut buckets = vec![0; tollgate_filter::usage::LATENCY_BUCKETS];
    buckets[2] = 3;
    let first = rows.first().map(|r| r.counts.clone());
    assert_eq!(
        first,
        Some(Counts {
            requests: 3,
            bytes_in: 6,
            bytes_out: 9,
            errors_4xx: 1,
            errors_5xx: 0,
            latency_ms_sum: 30,
            latency_buckets: buckets,
        })
    );
    let users = database
        .active_users("acme", "2026-11-24", "2026-11-26")
        .await
        .unwrap();
    assert_eq!(
        users.into_iter().collect::<Vec<_>>(),
        [("2026-11-25".to_owned(), 7)]
    );
    let nobody = database
        .daily_rows("initech", "2026-11-01", "2026-11-30")
        .await
        .unwrap();
    assert!(nobody.is_empty());
}
