//! The evaluator over a real (SQLite) registry and outbox, with usage given by the test.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;

use super::*;
use crate::services::registry::Registry;
use crate::services::registry::input::{PlanInput, TenantInput};
use crate::storage::sql::Database;
use crate::storage::sql::query::DailyRow;

/// Usage as the test says: requests per tenant, whatever the range.
#[derive(Default)]
struct Usage(Mutex<HashMap<String, u64>>);

impl UsageQueries for Usage {
    async fn daily_rows(&self, _: &str, _: &str, _: &str) -> Result<Vec<DailyRow>, sqlx::Error> {
        Ok(Vec::new())
    }
    async fn active_users(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        Ok(BTreeMap::new())
    }
    async fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> Result<HashMap<String, u64>, sqlx::Error> {
        let used = self.0.lock().unwrap();
        Ok(ranges
            .iter()
            .filter_map(|r| used.get(&r.tenant).map(|u| (r.tenant.clone(), *u)))
            .collect())
    }
}

/// 2026-12-01T00:00:00Z.
const DEC_1: u64 = 1_796_083_200;
const JAN_1: u64 = DEC_1 + 31 * DAY;

async fn setup() -> (Arc<Database>, Evaluator<Database, Usage>) {
    let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
    database.migrate().await.unwrap();
    let store = Arc::new(database);
    let registry = Registry::new(Arc::clone(&store), || DEC_1 * 1_000_000_000);
    let plan: PlanInput = serde_json::from_value(serde_json::json!({
        "requests_per_minute": 100, "monthly_quota": 20, "overage": "bill",
        "overage_price": {"per": 10, "amount": 7, "currency": "usd"}}))
    .unwrap();
    registry.put_plan("small", plan).await.unwrap();
    let free: PlanInput =
        serde_json::from_value(serde_json::json!({"requests_per_minute": 100})).unwrap();
    registry.put_plan("unlimited", free).await.unwrap();
    for (id, plan) in [("acme", "small"), ("quiet", "small"), ("free", "unlimited")] {
        let tenant: TenantInput = serde_json::from_value(serde_json::json!({
            "plan": plan, "alerts": {"webhook_url": "http://127.0.0.1:9/hook",
                                     "email": "ops@acme.example"}}))
        .unwrap();
        registry.put_tenant(id, tenant).await.unwrap();
    }
    let evaluator = Evaluator {
        store: Arc::clone(&store),
        usage: Arc::new(Usage::default()),
        metrics: Arc::new(Metrics::new()),
        email: true,
        outbox: Outbox::default(),
        pause_after_decision: None,
    };
    (store, evaluator)
}

fn use_requests(evaluator: &Evaluator<Database, Usage>, tenant: &str, requests: u64) {
    evaluator
        .usage
        .0
        .lock()
        .unwrap()
        .insert(tenant.into(), requests);
}

#[tokio::test]
async fn thresholds_fire_once_each_with_a_webhook_and_an_email() {
    let (store, evaluator) = setup().await;
    let now = DEC_1 + 2 * DAY;
    use_requests(&evaluator, "acme", 15);
    use_requests(&evaluator, "free", 1_000_000);
    let round = evaluator.evaluate(now, 5).await.unwrap();
    assert_eq!((round.tenants, round.fired), (2, 0)); // `free` has no quota
    // A jump from 75 % to 110 %: both thresholds, each with a webhook and an e-mail.
    use_requests(&evaluator, "acme", 22);
    let round = evaluator.evaluate(now + 60, 5).await.unwrap();
    assert_eq!((round.fired, round.deliveries), (2, 4));
    let deliveries = store.deliveries("acme").await.unwrap();
    assert_eq!(deliveries.len(), 4);
    let event_80 = alert_id("acme", DEC_1, AlertKind::ThresholdReached, 80);
    let webhook_80 = delivery_id(&event_80, Channel::Webhook);
    assert!(
        deliveries
            .iter()
            .any(|d| d.id == webhook_80 && d.status == "pending")
    );
    let due = store.due(5, 100).await.unwrap();
    assert_eq!(due.len(), 4);
    let first = due.iter().find(|d| d.id == webhook_80).unwrap();
    let body: Value = serde_json::from_str(&first.payload).unwrap();
    assert_eq!(body["type"], "quota.threshold_reached");
    assert_eq!(body["timestamp"], "2026-12-03T00:01:00Z");
    assert_eq!(body["data"]["threshold"], 80);
    assert_eq!(body["data"]["used"], 22);
    assert_eq!(body["data"]["quota"], 20);
    assert_eq!(
        first
            .webhook_secret
            .as_deref()
            .map(|s| s.starts_with("whsec_")),
        Some(true)
    );
    // Again, and with more usage: nothing new.
    use_requests(&evaluator, "acme", 40);
    let round = evaluator.evaluate(now + 120, 5).await.unwrap();
    assert_eq!(round.fired, 0);
    // The next period re-arms both.
    let round = evaluator.evaluate(JAN_1 + 60, 5).await.unwrap();
    assert_eq!(round.fired, 2);
    assert_eq!(store.deliveries("acme").await.unwrap().len(), 8);
}

#[tokio::test]
async fn the_period_ending_warning_carries_the_forecast_once() {
    let (store, evaluator) = setup().await;
    use_requests(&evaluator, "quiet", 12); // 60 %: no threshold
    let now = JAN_1 - DAY; // 30 of 31 days gone
    let round = evaluator.evaluate(now, 5).await.unwrap();
    assert_eq!(round.fired, 2); // quiet's and acme's (no usage: forecast 0)
    let due = store.due(5, 100).await.unwrap();
    let quiet = due
        .iter()
        .find(|d| d.tenant == "quiet" && d.channel == Channel::Webhook)
        .unwrap();
    let body: Value = serde_json::from_str(&quiet.payload).unwrap();
    assert_eq!(body["type"], "quota.period_ending");
    assert_eq!(body["data"]["forecast"], 12); // ⌊12 × 31 ÷ 30⌋
    assert_eq!(body["data"]["forecast_overage"], 0);
    assert_eq!(evaluator.evaluate(now + 3_600, 5).await.unwrap().fired, 0);
}

#[tokio::test]
async fn a_disabled_endpoint_gets_no_new_webhooks() {
    let (store, evaluator) = setup().await;
    store
        .disable_webhook("acme", "http://127.0.0.1:9/hook", DEC_1 + 10, "410")
        .await
        .unwrap();
    use_requests(&evaluator, "acme", 16);
    let round = evaluator.evaluate(DEC_1 + DAY, 5).await.unwrap();
    assert_eq!((round.fired, round.deliveries), (1, 1)); // the e-mail only
    let deliveries = store.deliveries("acme").await.unwrap();
    assert_eq!(deliveries[0].channel, "email");
}
