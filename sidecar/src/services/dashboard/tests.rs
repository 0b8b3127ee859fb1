//! The dashboard's figures over a real (SQLite) usage database.

use tollgate_filter::registry::{Overage, TenantStatus};
use tollgate_filter::usage::parse_date;

use super::*;
use crate::storage::sql::Database;
use crate::storage::sql::UsageSink;
use crate::storage::sql::registry::{Alerts, Billing, OveragePrice, TenantRecord};
use crate::storage::usage::{Counters, Snapshot, UsageRow};

fn at(date: &str, hour: u64) -> u64 {
    u64::try_from(parse_date(date).unwrap()).unwrap() * DAY + hour * 3_600
}

fn row(date: &str, endpoint: &str, requests: u64, errors_5xx: u64) -> UsageRow {
    let mut counters = Counters {
        requests,
        errors_5xx,
        latency_ms_sum: requests,
        ..Counters::default()
    };
    counters.latency_buckets[1] = requests; // (5, 10] ms
    UsageRow {
        date: date.into(),
        endpoint: endpoint.into(),
        plan: "pro".into(),
        counters,
    }
}

fn plan(quota: u64, overage: Overage) -> PlanRecord {
    PlanRecord {
        name: "pro".into(),
        requests_per_minute: 1_000,
        burst: None,
        monthly_quota: Some(quota),
        overage,
        overage_price: Some(OveragePrice {
            per: 100,
            amount: 30,
            currency: "eur".into(),
        }),
        billing: Billing::None,
        meter_event_name: "api_requests".into(),
    }
}

async fn database() -> Database {
    let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
    database.migrate().await.unwrap();
    let snapshot = Snapshot {
        tenant: "acme".into(),
        flush_id: "f1".into(),
        rows: vec![
            // Before the chart's 30 days (2026-11-07 … 2026-12-06) and the period (from
            // 2026-12-01): in neither.
            row("2026-11-06", "GET a", 1_000, 0),
            // In the chart, before the period.
            row("2026-11-20", "GET a", 10, 1),
            // In the chart and the period.
            row("2026-12-02", "GET a", 30, 0),
            row("2026-12-02", "GET b", 5, 5),
            row("2026-12-06", "GET c", 40, 0),
        ],
        users: vec![("2026-12-06".into(), 3)],
    };
    database.apply(&snapshot).await.unwrap();
    let other = Snapshot {
        tenant: "globex".into(),
        flush_id: "f2".into(),
        rows: vec![row("2026-12-06", "GET a", 999, 0)],
        users: vec![],
    };
    database.apply(&other).await.unwrap();
    database
}

#[tokio::test]
async fn figures_split_the_period_from_the_thirty_days() {
    let database = database().await;
    let subject = Subject {
        id: "acme".into(),
        plan: Some("pro".into()),
        terms: Some(plan(100, Overage::Bill)),
        anchor_day: 1,
    };
    // 2026-12-06 00:00 + 12 h: 5.5 days of a 31-day period.
    let now = at("2026-12-06", 12);
    let data = tenant_data(&database, &subject, now).await.unwrap();
    assert_eq!(data.days.len(), 30);
    assert_eq!(data.days[0].date, "2026-11-07");
    assert_eq!(data.days[29].date, "2026-12-06");
    assert_eq!(
        (data.days[29].requests, data.days[29].active_users),
        (40, 3)
    );
    let day = |d: &str| data.days.iter().find(|x| x.date == d).unwrap();
    assert_eq!(
        (day("2026-11-20").requests, day("2026-11-20").errors),
        (10, 1)
    );
    assert_eq!(
        (day("2026-12-02").requests, day("2026-12-02").errors),
        (35, 5)
    );
    // The period (from 2026-12-01) holds 75; the November rows are not in it.
    assert_eq!(data.quota.used, 75);
    assert_eq!(data.quota.left, Some(25));
    assert_eq!(data.quota.percent_used, Some(75.0));
    assert_eq!(data.period.start, "2026-12-01");
    assert_eq!(data.period.end, "2027-01-01");
    // 75 × 31 / 5.5 = 422 (rounded down); 322 over, 4 started hundreds at 0.30 EUR.
    assert_eq!(data.forecast.requests, Some(422));
    assert_eq!(data.forecast.overage_requests, Some(322));
    assert_eq!(
        data.forecast.overage_amount.as_ref().map(|m| m.amount),
        Some(120)
    );
    // Top endpoints over the 30 days: a (40), c (40), b (5); ties by name.
    let top: Vec<(&str, u64, u64)> = data
        .top_endpoints
        .iter()
        .map(|e| (e.endpoint.as_str(), e.requests, e.errors))
        .collect();
    assert_eq!(top, [("GET a", 40, 1), ("GET c", 40, 0), ("GET b", 5, 5)]);
    assert_eq!(data.top_endpoints[2].error_rate, Some(1.0));
    assert_eq!(data.top_endpoints[0].p95_ms, Some(9.75));
    assert_eq!(data.active_users_today, 3);
}

#[tokio::test]
async fn the_overview_ranks_tenants_by_share_of_quota() {
    let database = database().await;
    let now = at("2026-12-06", 12);
    let small = PlanRecord {
        name: "small".into(),
        monthly_quota: Some(10_000),
        ..plan(10_000, Overage::Block)
    };
    let none = PlanRecord {
        name: "none".into(),
        monthly_quota: None,
        ..plan(1, Overage::Block)
    };
    for p in [plan(100, Overage::Bill), small, none] {
        database.put_plan(&p, now).await.unwrap();
    }
    for (id, plan, anchor) in [
        ("acme", "pro", 1),
        ("globex", "small", 15),
        ("initech", "none", 1),
    ] {
        let tenant = TenantRecord {
            id: id.into(),
            plan: plan.into(),
            stripe_customer_id: None,
            billing_anchor_day: anchor,
            status: TenantStatus::Active,
            alerts: Alerts {
                webhook_url: None,
                email: None,
                thresholds: vec![80, 100],
            },
            webhook_secret: None,
            quota_period_start: 0,
            quota_exhausted: false,
            created_at: now,
            updated_at: now,
        };
        database.put_tenant(&tenant, now).await.unwrap();
    }
    let rows = overview(&database, &database, now).await.unwrap();
    let seen: Vec<(&str, u64, Option<f64>, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.tenant.as_str(),
                r.used,
                r.percent_used,
                r.period_start.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("acme", 75, Some(75.0), "2026-12-01"),
            ("globex", 999, Some(9.99), "2026-11-15"),
            ("initech", 0, None, "2026-12-01"),
        ]
    );
}

#[tokio::test]
async fn a_period_starting_before_the_thirty_days_counts_its_first_day() {
    let database = database().await;
    let snapshot = Snapshot {
        tenant: "late".into(),
        flush_id: "f3".into(),
        rows: vec![
            row("2026-11-30", "GET a", 100, 0),
            row("2026-12-01", "GET a", 7, 0),
            row("2026-12-02", "GET b", 5, 0),
        ],
        users: vec![],
    };
    database.apply(&snapshot).await.unwrap();
    let subject = Subject {
        id: "late".into(),
        plan: None,
        terms: None,
        anchor_day: 1,
    };
    // On 2026-12-31 the chart starts on 12-02, the period on 12-01.
    let data = tenant_data(&database, &subject, at("2026-12-31", 0))
        .await
        .unwrap();
    assert_eq!(data.days[0].date, "2026-12-02");
    assert_eq!(data.quota.used, 12);
    assert_eq!(
        (data.quota.monthly_quota, data.quota.percent_used),
        (None, None)
    );
    let top: Vec<(&str, u64)> = data
        .top_endpoints
        .iter()
        .map(|e| (e.endpoint.as_str(), e.requests))
        .collect();
    assert_eq!(top, [("GET b", 5)]);
}
