//! The [`RegistryStore`] contract: puts say created or replaced, plan changes are kept,
//! keys are found by id, hash and tenant, revoked and expired keys are not live, every write
//! bumps the version once, and quota states bump it only when they change.

use tollgate_filter::registry::{Overage, TenantStatus};

use crate::storage::sql::registry::{
    Alerts, Billing, KeyRecord, OveragePrice, PlanRecord, Put, RegistryStore, TenantRecord,
};

fn plan(name: &str, rpm: u64) -> PlanRecord {
    PlanRecord {
        name: name.into(),
        requests_per_minute: rpm,
        burst: Some(rpm / 2),
        monthly_quota: Some(1_000),
        overage: Overage::Block,
        overage_price: Some(OveragePrice {
            per: 1_000,
            amount: 50,
            currency: "usd".into(),
        }),
        billing: Billing::Fixed,
        meter_event_name: "api_requests".into(),
    }
}

fn tenant(id: &str, plan: &str) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        plan: plan.into(),
        stripe_customer_id: Some("cus_1".into()),
        billing_anchor_day: 15,
        status: TenantStatus::Active,
        alerts: Alerts {
            webhook_url: Some("https://hooks.example.com/x".into()),
            email: None,
            thresholds: vec![80, 100],
        },
        webhook_secret: Some("whsec_c2VjcmV0".into()),
        quota_period_start: 0,
        quota_exhausted: false,
        created_at: 100,
        updated_at: 100,
    }
}

fn key(id: &str, tenant: &str, byte: char) -> KeyRecord {
    KeyRecord {
        key_id: id.into(),
        sha256: byte.to_string().repeat(64),
        prefix: "tg_abcdef".into(),
        tenant: tenant.into(),
        created_at: 100,
        expires_at: None,
        revoked_at: None,
    }
}

pub(crate) async fn keeps_plans_tenants_keys_and_versions(db: &impl RegistryStore) {
    assert_eq!(db.changes(0).await.unwrap().version, 0);
    assert_eq!(
        db.put_plan(&plan("free", 60), 100).await.unwrap(),
        Put::Created
    );
    assert_eq!(
        db.put_plan(&plan("pro", 1_000), 100).await.unwrap(),
        Put::Created
    );
    let mut free = plan("free", 120);
    free.overage_price = None;
    free.monthly_quota = None;
    assert_eq!(db.put_plan(&free, 101).await.unwrap(), Put::Replaced);
    assert_eq!(db.plan("free").await.unwrap().unwrap(), free);
    assert_eq!(db.plan("pro").await.unwrap().unwrap(), plan("pro", 1_000));
    assert!(db.plan("gold").await.unwrap().is_none());
    assert_eq!(db.plans().await.unwrap().len(), 2);

    assert_eq!(
        db.put_tenant(&tenant("acme", "free"), 100).await.unwrap(),
        (Put::Created, 100)
    );
    assert_eq!(
        db.put_tenant(&tenant("acme", "pro"), 200).await.unwrap(),
        (Put::Replaced, 100)
    );
    assert_eq!(
        db.put_tenant(&tenant("acme", "pro"), 300).await.unwrap(),
        (Put::Replaced, 100)
    );
    assert_eq!(
        db.put_tenant(&tenant("beta", "free"), 300).await.unwrap(),
        (Put::Created, 300)
    );
    let acme = db.tenant("acme").await.unwrap().unwrap();
    assert_eq!(
        (acme.plan.as_str(), acme.created_at, acme.updated_at),
        ("pro", 100, 300)
    );
    assert_eq!(acme.alerts, tenant("acme", "pro").alerts);
    assert_eq!(
        db.plan_history("acme").await.unwrap(),
        vec![("free".to_owned(), 100), ("pro".to_owned(), 200)]
    );
    let ids = |list: Vec<TenantRecord>| list.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(db.tenants("", "", 10).await.unwrap()), ["acme", "beta"]);
    assert_eq!(ids(db.tenants("", "acme", 10).await.unwrap()), ["beta"]);
    assert_eq!(ids(db.tenants("ac", "", 10).await.unwrap()), ["acme"]);
    assert_eq!(ids(db.tenants("", "", 1).await.unwrap()), ["acme"]);

    let before = db.changes(0).await.unwrap().version;
    assert_eq!(before, 7);
    db.insert_key(&key("key_1", "acme", 'a'), 400)
        .await
        .unwrap();
    db.insert_key(&key("key_2", "acme", 'b'), 400)
        .await
        .unwrap();
    assert!(
        db.insert_key(&key("key_3", "acme", 'a'), 400)
            .await
            .is_err(),
        "same hash"
    );
    assert_eq!(
        db.key_by_hash(&"b".repeat(64))
            .await
            .unwrap()
            .unwrap()
            .key_id,
        "key_2"
    );
    assert!(db.revoke_key("key_1", 500).await.unwrap());
    assert!(db.revoke_key("key_1", 600).await.unwrap());
    assert_eq!(
        db.key("key_1").await.unwrap().unwrap().revoked_at,
        Some(500)
    );
    assert!(!db.revoke_key("key_9", 500).await.unwrap());
    assert!(db.expire_key("key_2", 700, 500).await.unwrap());
    assert_eq!(db.keys("acme").await.unwrap().len(), 2);
    let live = |now| async move { db.live_keys(now).await.unwrap().len() };
    assert_eq!((live(699).await, live(700).await), (1, 0));

    let changes = db.changes(before).await.unwrap();
    assert_eq!(changes.version, before + 4, "revoking twice writes once");
    assert_eq!(changes.oldest, 1);
    assert_eq!(
        changes.changed,
        [
            ("key".to_owned(), "key_1".to_owned()),
            ("key".into(), "key_2".into())
        ]
    );
    assert!(db.set_quota_state("acme", 1_000, true, 800).await.unwrap());
    assert!(!db.set_quota_state("acme", 1_000, true, 801).await.unwrap());
    let acme = db.tenant("acme").await.unwrap().unwrap();
    assert_eq!(
        (acme.quota_period_start, acme.quota_exhausted),
        (1_000, true)
    );
    let changes = db.changes(before + 4).await.unwrap();
    assert_eq!(changes.changed, [("tenant".to_owned(), "acme".to_owned())]);
    assert!(
        db.put_tenant(&tenant("ghost", "gold"), 900).await.is_err(),
        "unknown plan"
    );
    assert_eq!(
        db.requests_between("acme", "2026-01-01", "2026-02-01")
            .await
            .unwrap(),
        0
    );
}

/// Deleting a tenant takes its keys and plan history along (one change for it, one per key
/// named by hash), leaves others alone, and says `false` for an unknown tenant; pruning keeps
/// the newest changes and the version.
pub(crate) async fn deletes_tenants_and_prunes_changes(db: &impl RegistryStore) {
    db.put_plan(&plan("free", 60), 100).await.unwrap();
    db.put_tenant(&tenant("acme", "free"), 100).await.unwrap();
    db.put_tenant(&tenant("globex", "free"), 100).await.unwrap();
    db.insert_key(&key("k1", "acme", 'a'), 100).await.unwrap();
    db.insert_key(&key("k2", "acme", 'b'), 100).await.unwrap();
    db.insert_key(&key("k3", "globex", 'c'), 100).await.unwrap();
    let before = db.changes(0).await.unwrap().version;
    assert!(db.delete_tenant("acme", 200).await.unwrap());
    assert!(!db.delete_tenant("acme", 201).await.unwrap());
    assert!(!db.delete_tenant("initech", 201).await.unwrap());
    assert!(db.tenant("acme").await.unwrap().is_none());
    assert!(db.key("k1").await.unwrap().is_none());
    assert!(db.plan_history("acme").await.unwrap().is_empty());
    assert!(db.tenant("globex").await.unwrap().is_some());
    assert_eq!(db.live_keys(300).await.unwrap().len(), 1);
    let changes = db.changes(before).await.unwrap();
    assert_eq!(changes.version, before + 3);
    let mut changed = changes.changed.clone();
    changed.sort();
    assert_eq!(
        changed,
        [
            ("key".to_owned(), format!("sha256:{}", "a".repeat(64))),
            ("key".to_owned(), format!("sha256:{}", "b".repeat(64))),
            ("tenant".to_owned(), "acme".to_owned()),
        ]
    );
    // The tenant id can be used again, from scratch.
    db.put_tenant(&tenant("acme", "free"), 300).await.unwrap();
    assert!(db.keys("acme").await.unwrap().is_empty());

    let version = db.changes(0).await.unwrap().version;
    assert_eq!(db.prune_changes(2).await.unwrap(), version - 2);
    assert_eq!(db.prune_changes(2).await.unwrap(), 0);
    let kept = db.changes(0).await.unwrap();
    assert_eq!((kept.version, kept.oldest), (version, version - 1));
    // The two kept: the deletion of acme and its new put, one entity.
    assert_eq!(kept.changed, [("tenant".to_owned(), "acme".to_owned())]);
}
