//! What the admin API shows of a tenant's alerts: each delivery (its alert, channel, target,
//! status, attempts so far, next attempt) with every attempt (when, the HTTP status or SMTP
//! reply code, the error, how long it took), oldest first.

use serde_json::{Value, json};

use crate::storage::sql::alerts::AlertStore;

/// `tenant`'s deliveries and their attempts as JSON.
pub async fn history<D: AlertStore>(store: &D, tenant: &str) -> Result<Value, sqlx::Error> {
    let mut deliveries = Vec::new();
    for delivery in store.deliveries(tenant).await? {
        let attempts = store.attempts(&delivery.id).await?;
        let mut entry = json!(delivery);
        if let Some(object) = entry.as_object_mut() {
            object.insert("attempt_log".into(), json!(attempts));
        }
        deliveries.push(entry);
    }
    Ok(json!({"tenant": tenant, "deliveries": deliveries}))
}
