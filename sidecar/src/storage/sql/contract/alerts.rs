//! The [`AlertStore`] contract: an alert is recorded once per key with its deliveries (in
//! chunks larger than one statement), due deliveries come with the tenant's webhook secret,
//! a claim succeeds once, every attempt is kept, retries wait, a 410 disables the endpoint and
//! its pending webhooks until the tenant is written again.

use tollgate_filter::registry::{Overage, TenantStatus};

use crate::storage::sql::alerts::{
    AlertKind, AlertStore, Attempt, Channel, NewAlert, NewDelivery, Outcome,
};
use crate::storage::sql::registry::{Alerts, Billing, PlanRecord, RegistryStore, TenantRecord};

fn tenant(id: &str, now: u64) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        plan: "small".into(),
        stripe_customer_id: None,
        billing_anchor_day: 1,
        status: TenantStatus::Active,
        alerts: Alerts {
            webhook_url: Some("http://hooks.example/a".into()),
            email: Some("ops@example.com".into()),
            thresholds: vec![80, 100],
        },
        webhook_secret: Some("whsec_c2VjcmV0".into()),
        quota_period_start: 0,
        quota_exhausted: false,
        created_at: now,
        updated_at: now,
    }
}

fn alert(
    tenant: &str,
    start: u64,
    kind: AlertKind,
    threshold: u32,
    channels: &[Channel],
) -> NewAlert {
    let id = format!("evt_{tenant}_{start}_{}_{threshold}", kind.as_str());
    NewAlert {
        deliveries: channels
            .iter()
            .map(|c| NewDelivery {
                id: format!("msg_{id}_{}", c.as_str()),
                channel: *c,
                target: "somewhere".into(),
            })
            .collect(),
        id,
        tenant: tenant.into(),
        period_start: start,
        period_end: start + 100,
        kind,
        threshold,
        used: 16,
        quota: 20,
        payload: r#"{"type":"quota.threshold_reached"}"#.into(),
    }
}

pub(crate) async fn records_once_and_delivers_with_attempts(
    db: &(impl AlertStore + RegistryStore),
) {
    let plan = PlanRecord {
        name: "small".into(),
        requests_per_minute: 10,
        burst: None,
        monthly_quota: Some(20),
        overage: Overage::Block,
        overage_price: None,
        billing: Billing::None,
        meter_event_name: "api_requests".into(),
    };
    db.put_plan(&plan, 100).await.unwrap();
    db.put_tenant(&tenant("acme", 100), 100).await.unwrap();
    let both = [Channel::Webhook, Channel::Email];
    let first = [
        alert("acme", 1_000, AlertKind::ThresholdReached, 80, &both),
        alert(
            "acme",
            1_000,
            AlertKind::ThresholdReached,
            100,
            &[Channel::Webhook],
        ),
    ];
    let recorded = db.record(&first, 200, 200_000).await.unwrap();
    assert_eq!((recorded.ids.len(), recorded.deliveries), (2, 3));
    // Recorded again (another sidecar's round): nothing new, deliveries included.
    let again = db.record(&first, 201, 201_000).await.unwrap();
    assert_eq!((again.ids.len(), again.deliveries), (0, 0));
    let mut fired = db.fired_since(1_000).await.unwrap();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("acme".to_owned(), 1_000, AlertKind::ThresholdReached, 80),
            ("acme".to_owned(), 1_000, AlertKind::ThresholdReached, 100)
        ]
    );
    assert!(db.fired_since(1_001).await.unwrap().is_empty());

    // Due from their time on, with the tenant's webhook and secret.
    assert!(db.due(199_999, 10).await.unwrap().is_empty());
    let due = db.due(200_000, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    let hook = due.iter().find(|d| d.id.ends_with("_80_webhook")).unwrap();
    assert_eq!(hook.channel, Channel::Webhook);
    assert_eq!(hook.kind, AlertKind::ThresholdReached);
    assert_eq!(hook.webhook_url.as_deref(), Some("http://hooks.example/a"));
    assert_eq!(hook.webhook_secret.as_deref(), Some("whsec_c2VjcmV0"));
    assert_eq!(hook.email.as_deref(), Some("ops@example.com"));
    assert_eq!(hook.payload, r#"{"type":"quota.threshold_reached"}"#);
    assert!(!hook.webhook_disabled);
    assert_eq!(db.due(200_000, 2).await.unwrap().len(), 2);

    // One claim wins; a retry waits; each attempt is kept.
    assert!(
        db.claim(&hook.id, hook.next_attempt_at, 260_000)
            .await
            .unwrap()
    );
    assert!(
        !db.claim(&hook.id, hook.next_attempt_at, 260_000)
            .await
            .unwrap()
    );
    assert_eq!(db.due(200_000, 10).await.unwrap().len(), 2);
    let failed = Attempt {
        delivery_id: hook.id.clone(),
        attempt: 1,
        at: 200_500,
        status: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 12,
    };
    db.finish(&failed, Outcome::Retry(205_000), 200)
        .await
        .unwrap();
    assert!(
        !db.due(204_999, 10)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == hook.id)
    );
    let retry = db.due(205_000, 10).await.unwrap();
    let retry = retry.iter().find(|d| d.id == hook.id).unwrap();
    assert_eq!(retry.attempts, 1);
    assert!(db.claim(&hook.id, 205_000, 265_000).await.unwrap());
    let ok = Attempt {
        attempt: 2,
        at: 205_100,
        status: Some(204),
        error: None,
        ..failed.clone()
    };
    db.finish(&ok, Outcome::Delivered, 205).await.unwrap();
    assert_eq!(db.attempts(&hook.id).await.unwrap(), [failed, ok]);
    let listed = db.deliveries("acme").await.unwrap();
    let delivered = listed.iter().find(|d| d.id == hook.id).unwrap();
    assert_eq!(
        (delivered.status.as_str(), delivered.attempts),
        ("delivered", 2)
    );
    assert!(
        !db.due(999_999, 10)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == hook.id)
    );

    // A 410: the tenant's pending webhooks are disabled, e-mails are not.
    let pending = db
        .disable_webhook("acme", "http://hooks.example/a", 300, "gone")
        .await
        .unwrap();
    assert_eq!(pending, 1);
    let left = db.due(999_999, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].channel, Channel::Email);
    assert!(left[0].webhook_disabled);
    assert_eq!(
        db.disabled_webhooks().await.unwrap(),
        [("acme".to_owned(), "http://hooks.example/a".to_owned())]
    );
    // Writing the tenant again re-enables it.
    db.put_tenant(&tenant("acme", 100), 301).await.unwrap();
    assert!(db.disabled_webhooks().await.unwrap().is_empty());
    assert!(!db.due(999_999, 10).await.unwrap()[0].webhook_disabled);

    // Many at once: more than one statement's worth, all recorded.
    let many: Vec<NewAlert> = (0..1_201)
        .map(|i| {
            alert(
                &format!("t{i:05}"),
                2_000,
                AlertKind::PeriodEnding,
                0,
                &both,
            )
        })
        .collect();
    let recorded = db.record(&many, 400, 400_000).await.unwrap();
    assert_eq!((recorded.ids.len(), recorded.deliveries), (1_201, 2_402));
    assert_eq!(db.fired_since(2_000).await.unwrap().len(), 1_201);
}
