//! [`UsageQueries`]' contract: a tenant's rows between two dates, both included, by date and
//! endpoint, nobody else's; active users per day, days without a row absent.

use std::collections::HashMap;

use crate::storage::sql::query::Counts;
use crate::storage::sql::{Database, TenantRange, UsageQueries, UsageSink};
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

/// [`UsageQueries::period_requests`]' default (one `daily_rows` per range), to compare with.
struct OneByOne(Database);

impl UsageQueries for OneByOne {
    async fn daily_rows(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<crate::storage::sql::query::DailyRow>, sqlx::Error> {
        self.0.daily_rows(tenant, from, to).await
    }

    async fn active_users(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, sqlx::Error> {
        self.0.active_users(tenant, from, to).await
    }
}

fn range(tenant: &str, from: &str, to: &str) -> TenantRange {
    TenantRange {
        tenant: tenant.into(),
        from: from.into(),
        to: to.into(),
    }
}

/// Each tenant's requests over its own dates (both included), in one call: tenants without
/// usage absent, other tenants' rows and rows outside the range left out, a tenant listed
/// twice counted once (its last range); the same answers as one `daily_rows` per tenant.
pub(in crate::storage::sql) async fn sums_each_tenants_own_period(database: &Database) {
    fill(database).await;
    let ranges = [
        range("acme", "2026-11-25", "2026-11-26"),
        range("globex", "2026-11-01", "2026-11-30"),
        range("initech", "2026-11-01", "2026-11-30"),
    ];
    let totals = database.period_requests(&ranges).await.unwrap();
    let expected = HashMap::from([("acme".to_owned(), 5), ("globex".to_owned(), 100)]);
    assert_eq!(totals, expected);
    assert_eq!(
        OneByOne(database.clone())
            .period_requests(&ranges)
            .await
            .unwrap(),
        expected
    );
    let twice = [
        range("acme", "2026-11-01", "2026-11-30"),
        range("acme", "2026-11-27", "2026-11-27"),
    ];
    let totals = database.period_requests(&twice).await.unwrap();
    assert_eq!(totals, HashMap::from([("acme".to_owned(), 4)]));
    assert!(database.period_requests(&[]).await.unwrap().is_empty());
    // Many tenants with periods that differ: the same as one query per tenant.
    let many: Vec<Snapshot> = (0..300u64)
        .map(|i| Snapshot {
            tenant: format!("t{i:03}"),
            flush_id: format!("many-{i}"),
            rows: (0..3u64)
                .map(|d| row(&format!("2026-11-{:02}", 10 + d + i % 5), "GET /a", i + d))
                .collect(),
            users: Vec::new(),
        })
        .collect();
    for snapshot in &many {
        database.apply(snapshot).await.unwrap();
    }
    let ranges: Vec<TenantRange> = (0..320u64)
        .map(|i| {
            let first = 10 + i % 7;
            range(
                &format!("t{i:03}"),
                &format!("2026-11-{first:02}"),
                &format!("2026-11-{:02}", first + 2),
            )
        })
        .collect();
    let bulk = database.period_requests(&ranges).await.unwrap();
    assert_eq!(
        bulk,
        OneByOne(database.clone())
            .period_requests(&ranges)
            .await
            .unwrap()
    );
    // Some periods miss their tenant's rows, tenants past t299 have none.
    assert!(bulk.len() > 100 && bulk.len() < 300, "{}", bulk.len());
}
