//! The [`BillingStore`] contract, with the flush that fills it ([`UsageSink::apply`]): a
//! metered tenant's flushed usage becomes one outbox row per day in the flush's transaction,
//! never twice for one flush id; other plans get none; claims lease rows, waiting rows are
//! only looked at again when due (or asked for), and settled rows keep what was decided.

use tollgate_filter::registry::{Overage, TenantStatus};

use crate::storage::sql::billing::{BillingStore, OutboxCounts, Settled};
use crate::storage::sql::registry::{Alerts, Billing, PlanRecord, RegistryStore, TenantRecord};
use crate::storage::sql::sink::Applied;
use crate::storage::sql::{Database, UsageSink};
use crate::storage::usage::{Counters, Snapshot, UsageRow};

fn plan(name: &str, billing: Billing) -> PlanRecord {
    PlanRecord {
        name: name.into(),
        requests_per_minute: 100,
        burst: None,
        monthly_quota: None,
        overage: Overage::Block,
        overage_price: None,
        billing,
        meter_event_name: "api_requests".into(),
    }
}

fn tenant(id: &str, plan: &str, customer: Option<&str>) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        plan: plan.into(),
        stripe_customer_id: customer.map(Into::into),
        billing_anchor_day: 1,
        status: TenantStatus::Active,
        alerts: Alerts {
            webhook_url: None,
            email: None,
            thresholds: vec![],
        },
        webhook_secret: None,
        quota_period_start: 0,
        quota_exhausted: false,
        created_at: 1,
        updated_at: 1,
    }
}

fn snapshot(tenant: &str, flush_id: &str, days: &[(&str, u64)]) -> Snapshot {
    let mut rows = Vec::new();
    for (date, requests) in days {
        for endpoint in ["GET /a", "GET /b"] {
            rows.push(UsageRow {
                date: (*date).into(),
                endpoint: endpoint.into(),
                plan: String::new(),
                counters: Counters {
                    requests: *requests,
                    ..Counters::default()
                },
            });
        }
    }
    Snapshot {
        tenant: tenant.into(),
        flush_id: flush_id.into(),
        rows,
        users: vec![],
    }
}

fn today() -> String {
    tollgate_filter::usage::format_date(
        i64::try_from(crate::system_clock() / 86_400_000_000_000).unwrap(),
    )
}

pub(crate) async fn flush_fills_the_outbox_once(db: &Database) {
    db.put_plan(&plan("metered", Billing::Metered), 1)
        .await
        .unwrap();
    db.put_plan(&plan("fixed", Billing::Fixed), 1)
        .await
        .unwrap();
    db.put_tenant(&tenant("m", "metered", Some("cus_m")), 1)
        .await
        .unwrap();
    db.put_tenant(&tenant("w", "metered", None), 1)
        .await
        .unwrap();
    db.put_tenant(&tenant("f", "fixed", Some("cus_f")), 1)
        .await
        .unwrap();
    let day = today();
    let m = snapshot("m", "flush-1", &[("2026-11-30", 3), (&day, 4)]);
    assert_eq!(db.apply(&m).await.unwrap(), Applied::Now);
    assert_eq!(db.apply(&m).await.unwrap(), Applied::Before);
    db.apply(&snapshot("w", "flush-2", &[(&day, 5)]))
        .await
        .unwrap();
    db.apply(&snapshot("f", "flush-3", &[(&day, 6)]))
        .await
        .unwrap();
    assert_eq!(
        db.outbox_counts().await.unwrap(),
        OutboxCounts {
            pending: 3,
            ..OutboxCounts::default()
        }
    );

    let now = 1_000_000;
    let rows = db
        .claim_meter_events(now, now + 5_000, 100, false)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let first = &rows[0];
    assert_eq!(
        (first.tenant.as_str(), first.date.as_str(), first.value),
        ("m", "2026-11-30", 6)
    );
    assert_eq!(first.customer.as_deref(), Some("cus_m"));
    assert_eq!(first.event_name, "api_requests");
    assert!(first.identifier.starts_with("tg1_"));
    assert_eq!(rows[1].value, 8);
    assert_eq!(
        (rows[2].tenant.as_str(), rows[2].customer.as_deref()),
        ("w", None)
    );
    // Held by the lease: a second sender gets nothing.
    assert!(
        db.claim_meter_events(now + 1, now + 5_000, 100, false)
            .await
            .unwrap()
            .is_empty()
    );

    let settle = |id, status, next| Settled {
        id,
        status,
        attempted: status != "no_customer",
        next_attempt_ms: next,
        error: (status != "sent").then(|| format!("{status} because")),
        sent_at: (status == "sent").then_some(7),
        customer: None,
    };
    db.settle_meter_events(&[
        settle(rows[0].id, "sent", 0),
        settle(rows[1].id, "pending", now + 100),
        settle(rows[2].id, "no_customer", now + 60_000),
    ])
    .await
    .unwrap();
    assert_eq!(db.next_attempt_ms().await.unwrap(), Some(now + 100));
    assert!(
        db.claim_meter_events(now + 50, now + 5_000, 100, false)
            .await
            .unwrap()
            .is_empty()
    );
    let due = db
        .claim_meter_events(now + 100, now + 5_000, 100, false)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rows[1].id]
    );
    assert_eq!(due[0].attempts, 1);
    // Waiting rows come back when asked for (billing report), before their next look.
    let waiting = db
        .claim_meter_events(now + 200, now + 5_000, 100, true)
        .await
        .unwrap();
    assert_eq!(
        waiting.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rows[2].id]
    );
    let unsent = db.unsent_rows(10).await.unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].status, "no_customer");
    assert_eq!(unsent[0].error.as_deref(), Some("no_customer because"));
    // Usage of 2026-11-30 is older than a day before today's: stale once that old.
    let today_start = tollgate_filter::usage::parse_date(&day).unwrap() * 86_400;
    assert_eq!(db.unsent_older_than(today_start).await.unwrap(), 0);
    assert_eq!(db.unsent_older_than(today_start + 86_400).await.unwrap(), 2);
    let counts = db.outbox_counts().await.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.no_customer), (1, 1, 1));
}
