//! The alerts' statements: one text for both databases (both take `$N` parameters,
//! `ON CONFLICT`, `RETURNING` and multi-row `VALUES`), expanded once per dialect by
//! [`alert_statements!`] in `postgres/` and `sqlite/`.

/// Expands the [`AlertStore`](super::AlertStore) functions for the database `$db`.
macro_rules! alert_statements {
    ($db:ty) => {
        type Pool = sqlx::Pool<$db>;
        type DbRow = <$db as sqlx::Database>::Row;
        use std::collections::HashSet;

        use sqlx::Row as _;

        use crate::storage::sql::alerts::{
            AlertKind, Attempt, Channel, DeliveryRecord, DueDelivery, FiredKey, NewAlert,
            NewDelivery, Outcome, RECORD_CHUNK, Recorded,
        };
        use crate::storage::sql::registry::{signed, unsigned};

        fn small(value: i32) -> u32 {
            u32::try_from(value).unwrap_or(0)
        }

        fn small_signed(value: u32) -> i32 {
            i32::try_from(value).unwrap_or(i32::MAX)
        }

        pub(crate) async fn fired_since(
            pool: &Pool,
            period_start: u64,
        ) -> Result<Vec<FiredKey>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT tenant_id, period_start, kind, threshold FROM alert_events \
                 WHERE period_start >= $1",
            )
            .bind(signed(period_start))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get("tenant_id")?,
                        unsigned(row.try_get("period_start")?),
                        AlertKind::parse(row.try_get("kind")?)?,
                        small(row.try_get("threshold")?),
                    ))
                })
                .collect()
        }

        pub(crate) async fn record(
            pool: &Pool,
            alerts: &[NewAlert],
            now: u64,
            now_ms: u64,
        ) -> Result<Recorded, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let mut recorded = Recorded::default();
            for chunk in alerts.chunks(RECORD_CHUNK) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO alert_events (id, tenant_id, period_start, period_end, kind, \
                     threshold, used, quota, payload, created_at) ",
                );
                insert.push_values(chunk, |mut row, alert| {
                    row.push_bind(alert.id.as_str())
                        .push_bind(alert.tenant.as_str())
                        .push_bind(signed(alert.period_start))
                        .push_bind(signed(alert.period_end))
                        .push_bind(alert.kind.as_str())
                        .push_bind(small_signed(alert.threshold))
                        .push_bind(signed(alert.used))
                        .push_bind(signed(alert.quota))
                        .push_bind(alert.payload.as_str())
                        .push_bind(signed(now));
                });
                insert.push(" ON CONFLICT DO NOTHING RETURNING id");
                let inserted: HashSet<String> = insert
                    .build()
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<String, _>(0))
                    .collect::<Result<_, _>>()?;
                let deliveries: Vec<(&NewAlert, &NewDelivery)> = chunk
                    .iter()
                    .filter(|alert| inserted.contains(&alert.id))
                    .flat_map(|alert| alert.deliveries.iter().map(move |d| (alert, d)))
                    .collect();
                recorded.ids.extend(chunk.iter().filter(|a| inserted.contains(&a.id)).map(|a| a.id.clone()));
                for part in deliveries.chunks(RECORD_CHUNK) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO alert_deliveries (id, event_id, tenant_id, channel, target, \
                         status, attempts, next_attempt_at, created_at, updated_at) ",
                    );
                    insert.push_values(part, |mut row, (alert, delivery)| {
                        row.push_bind(delivery.id.as_str())
                            .push_bind(alert.id.as_str())
                            .push_bind(alert.tenant.as_str())
                            .push_bind(delivery.channel.as_str())
                            .push_bind(delivery.target.as_str())
                            .push_bind("pending")
                            .push_bind(0_i32)
                            .push_bind(signed(now_ms))
                            .push_bind(signed(now))
                            .push_bind(signed(now));
                    });
                    insert.push(" ON CONFLICT DO NOTHING");
                    recorded.deliveries += insert.build().execute(&mut *tx).await?.rows_affected();
                }
            }
            tx.commit().await?;
            Ok(recorded)
        }

        fn due_row(row: &DbRow) -> Result<DueDelivery, sqlx::Error> {
            Ok(DueDelivery {
                id: row.try_get("id")?,
                event_id: row.try_get("event_id")?,
                tenant: row.try_get("tenant_id")?,
                channel: Channel::parse(row.try_get("channel")?)?,
                target: row.try_get("target")?,
                attempts: small(row.try_get("attempts")?),
                next_attempt_at: unsigned(row.try_get("next_attempt_at")?),
                kind: AlertKind::parse(row.try_get("kind")?)?,
                payload: row.try_get("payload")?,
                webhook_url: row.try_get("webhook_url")?,
                webhook_secret: row.try_get("webhook_secret")?,
                email: row.try_get("alert_email")?,
                webhook_disabled: row.try_get::<i32, _>("webhook_disabled")? != 0,
            })
        }

        pub(crate) async fn due(
            pool: &Pool,
            now_ms: u64,
            limit: u32,
        ) -> Result<Vec<DueDelivery>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT d.id, d.event_id, d.tenant_id, d.channel, d.target, d.attempts, \
                 d.next_attempt_at, e.kind, e.payload, t.webhook_url, t.webhook_secret, \
                 t.alert_email, CASE WHEN w.disabled_at IS NOT NULL \
                 AND w.disabled_at >= t.updated_at THEN 1 ELSE 0 END AS webhook_disabled \
                 FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id \
                 LEFT JOIN tenants t ON t.id = d.tenant_id \
                 LEFT JOIN alert_webhooks_disabled w ON w.tenant_id = d.tenant_id \
                 AND w.webhook_url = t.webhook_url \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
                 ORDER BY d.next_attempt_at, d.id LIMIT $2",
            )
            .bind(signed(now_ms))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(due_row).collect()
        }

        pub(crate) async fn claim(
            pool: &Pool,
            id: &str,
            expected: u64,
            lease_until: u64,
        ) -> Result<bool, sqlx::Error> {
            let claimed = sqlx::query(
                "UPDATE alert_deliveries SET next_attempt_at = $3 \
                 WHERE id = $1 AND next_attempt_at = $2 AND status = 'pending'",
            )
            .bind(id)
            .bind(signed(expected))
            .bind(signed(lease_until))
            .execute(pool)
            .await?
            .rows_affected();
            Ok(claimed == 1)
        }

        pub(crate) async fn finish(
            pool: &Pool,
            attempt: &Attempt,
            outcome: Outcome,
            now: u64,
        ) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO alert_attempts (delivery_id, attempt, at, status, error, \
                 duration_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&attempt.delivery_id)
            .bind(small_signed(attempt.attempt))
            .bind(signed(attempt.at))
            .bind(attempt.status.map(small_signed))
            .bind(&attempt.error)
            .bind(signed(attempt.duration_ms))
            .execute(&mut *tx)
            .await?;
            let next = match outcome {
                Outcome::Retry(at) => at,
                _ => attempt.at,
            };
            sqlx::query(
                "UPDATE alert_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
                 last_error = $5, updated_at = $6 WHERE id = $1",
            )
            .bind(&attempt.delivery_id)
            .bind(outcome.status())
            .bind(small_signed(attempt.attempt))
            .bind(signed(next))
            .bind(&attempt.error)
            .bind(signed(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }

        pub(crate) async fn disable_webhook(
            pool: &Pool,
            tenant: &str,
            url: &str,
            now: u64,
            reason: &str,
        ) -> Result<u64, sqlx::Error> {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO alert_webhooks_disabled (tenant_id, webhook_url, disabled_at, \
                 reason) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, webhook_url) \
                 DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
            )
            .bind(tenant)
            .bind(url)
            .bind(signed(now))
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            let disabled = sqlx::query(
                "UPDATE alert_deliveries SET status = 'disabled', last_error = $2, \
                 updated_at = $3 WHERE tenant_id = $1 AND channel = 'webhook' \
                 AND status = 'pending'",
            )
            .bind(tenant)
            .bind(reason)
            .bind(signed(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(disabled)
        }

        pub(crate) async fn disabled_webhooks(
            pool: &Pool,
        ) -> Result<Vec<(String, String)>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT w.tenant_id, w.webhook_url FROM alert_webhooks_disabled w \
                 JOIN tenants t ON t.id = w.tenant_id WHERE w.disabled_at >= t.updated_at",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("webhook_url")?)))
                .collect()
        }

        pub(crate) async fn deliveries(
            pool: &Pool,
            tenant: &str,
        ) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT id, event_id, tenant_id, channel, target, status, attempts, \
                 next_attempt_at, last_error FROM alert_deliveries WHERE tenant_id = $1 \
                 ORDER BY created_at, id",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(DeliveryRecord {
                        id: row.try_get("id")?,
                        event_id: row.try_get("event_id")?,
                        tenant: row.try_get("tenant_id")?,
                        channel: row.try_get("channel")?,
                        target: row.try_get("target")?,
                        status: row.try_get("status")?,
                        attempts: small(row.try_get("attempts")?),
                        next_attempt_at: unsigned(row.try_get("next_attempt_at")?),
                        last_error: row.try_get("last_error")?,
                    })
                })
                .collect()
        }

        pub(crate) async fn attempts(pool: &Pool, id: &str) -> Result<Vec<Attempt>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT delivery_id, attempt, at, status, error, duration_ms \
                 FROM alert_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(Attempt {
                        delivery_id: row.try_get("delivery_id")?,
                        attempt: small(row.try_get("attempt")?),
                        at: unsigned(row.try_get("at")?),
                        status: row.try_get::<Option<i32>, _>("status")?.map(small),
                        error: row.try_get("error")?,
                        duration_ms: unsigned(row.try_get("duration_ms")?),
                    })
                })
                .collect()
        }
    };
}

pub(crate) use alert_statements;
