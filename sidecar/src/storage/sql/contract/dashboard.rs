//! [`DashboardStore`]'s contract: a link is used once, only before it expires; sessions are
//! read while live, ended on sign-out, and purged once ended.

use crate::storage::sql::dashboard::{DashboardStore, LinkUse, SessionRole};

const T0: u64 = 1_800_000_000;

pub(crate) async fn links_are_single_use_and_sessions_end(db: &impl DashboardStore) {
    db.insert_link("l1", "acme", T0, T0 + 900).await.unwrap();
    db.insert_link("l2", "acme", T0, T0 + 900).await.unwrap();
    assert_eq!(db.use_link("nope", T0).await.unwrap(), LinkUse::Unknown);
    assert_eq!(
        db.use_link("l1", T0 + 10).await.unwrap(),
        LinkUse::Signed("acme".into())
    );
    assert_eq!(
        db.use_link("l1", T0 + 11).await.unwrap(),
        LinkUse::AlreadyUsed
    );
    // Expiry is exclusive: at expires_at the link is dead.
    assert_eq!(db.use_link("l2", T0 + 900).await.unwrap(), LinkUse::Expired);
    assert_eq!(db.use_link("l2", T0 + 901).await.unwrap(), LinkUse::Expired);

    let a = "a".repeat(64);
    let o = "b".repeat(64);
    db.insert_session(&a, &SessionRole::Tenant("acme".into()), T0, T0 + 100)
        .await
        .unwrap();
    db.insert_session(&o, &SessionRole::Operator, T0, T0 + 200)
        .await
        .unwrap();
    let session = db.session(&a, T0 + 99).await.unwrap().unwrap();
    assert_eq!(session.role, SessionRole::Tenant("acme".into()));
    assert_eq!((session.created_at, session.expires_at), (T0, T0 + 100));
    assert_eq!(db.session(&a, T0 + 100).await.unwrap(), None);
    assert_eq!(
        db.session(&o, T0 + 100).await.unwrap().unwrap().role,
        SessionRole::Operator
    );
    assert_eq!(db.session(&"c".repeat(64), T0).await.unwrap(), None);
    assert!(db.delete_session(&o).await.unwrap());
    assert!(!db.delete_session(&o).await.unwrap());
    assert_eq!(db.session(&o, T0 + 1).await.unwrap(), None);

    // The ended session goes; the links stay a day past their expiry, then go.
    assert_eq!(db.purge(T0 + 100).await.unwrap(), 1);
    assert_eq!(db.purge(T0 + 900 + 86_400).await.unwrap(), 2);
    assert_eq!(
        db.use_link("l1", T0 + 900 + 86_401).await.unwrap(),
        LinkUse::Unknown
    );
}

/// [`UsageQueries::usage_summary`] of a database equals the fold of its rows (the default):
/// days, ranking (ties by name in byte order), counters and histograms.
pub(crate) async fn summary_folds_like_the_rows(db: &crate::storage::sql::Database) {
    use crate::storage::sql::summary::UsageSummary;
    use crate::storage::sql::{UsageQueries, UsageSink};
    use crate::storage::usage::{Counters, Snapshot, UsageRow};

    let row = |date: &str, endpoint: &str, requests: u64, bucket: usize| {
        let mut counters = Counters {
            requests,
            bytes_in: requests * 2,
            bytes_out: requests * 3,
            errors_4xx: requests % 3,
            errors_5xx: requests % 2,
            latency_ms_sum: requests * 7,
            ..Counters::default()
        };
        if let Some(b) = counters.latency_buckets.get_mut(bucket) {
            *b = requests;
        }
        UsageRow {
            date: date.into(),
            endpoint: endpoint.into(),
            plan: "pro".into(),
            counters,
        }
    };
    let mut rows = Vec::new();
    for (d, date) in ["2026-11-29", "2026-11-30", "2026-12-01"]
        .iter()
        .enumerate()
    {
        // "b" and "B" tie; byte order puts "B" first (a collation might not).
        for (e, endpoint) in [
            "GET a", "GET B", "GET b", "GET c", "GET d", "GET e", "GET f",
        ]
        .iter()
        .enumerate()
        {
            let requests = match *endpoint {
                "GET B" | "GET b" => 50,
                _ => (e as u64 + 1) * (d as u64 + 1),
            };
            rows.push(row(date, endpoint, requests, (e + d) % 12));
        }
    }
    let snapshot = Snapshot {
        tenant: "summed".into(),
        flush_id: "s1".into(),
        rows,
        users: vec![],
    };
    db.apply(&snapshot).await.unwrap();
    db.apply(&Snapshot {
        tenant: "other".into(),
        flush_id: "s2".into(),
        rows: vec![row("2026-11-30", "GET zzz", 10_000, 0)],
        users: vec![],
    })
    .await
    .unwrap();
    for (from, to, top) in [
        ("2026-11-29", "2026-12-01", 5),
        ("2026-11-30", "2026-11-30", 3),
        ("2026-11-30", "2026-12-31", 50),
        ("2027-01-01", "2027-01-31", 5),
    ] {
        let rows = db.daily_rows("summed", from, to).await.unwrap();
        let folded = UsageSummary::fold(&rows, top);
        let summed = db.usage_summary("summed", from, to, top).await.unwrap();
        assert_eq!(summed, folded, "{from}..{to} top {top}");
    }
    let top = db
        .usage_summary("summed", "2026-11-29", "2026-12-01", 3)
        .await
        .unwrap()
        .top_endpoints;
    let names: Vec<&str> = top.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["GET B", "GET b", "GET f"]);
}
