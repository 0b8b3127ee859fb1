//! [`UnflushedUsage`] on Redis: one [`UNFLUSHED_SCRIPT`](super::UNFLUSHED_SCRIPT) call per
//! tenant (atomic: live hashes, staged snapshots and the stage generation of one instant),
//! `GET usage:{t}:stages` for generations, `PFCOUNT usage:{t}:users:<date>` for users.

use std::collections::BTreeMap;

use futures_util::future::try_join_all;
use redis::Value;

use super::{RedisUsageStore, bad, corrupt, unavailable};
use crate::storage::usage::{Counters, Snapshot, StoreError, Unflushed, UnflushedUsage, UsageRow};

/// Tenants read at once (each one command on the shared, multiplexed connection).
const CONCURRENCY: usize = 32;

/// Rows and `(date, users)` counts read from staged or live hashes.
type Parsed = (Vec<UsageRow>, Vec<(String, u64)>);

/// Parses `[key, [field, value, …], …]` of hashes named `<prefix><date>:<endpoint>` (rows)
/// or `<prefix>users` (date → users counts) into rows and users, unsorted.
pub(super) fn parse_hashes(items: Vec<Value>, prefix: &str) -> Result<Parsed, StoreError> {
    let (mut rows, mut users) = (Vec::new(), Vec::new());
    let mut items = items.into_iter();
    while let (Some(key), Some(fields)) = (items.next(), items.next()) {
        let key: String = redis::from_redis_value(key).map_err(corrupt)?;
        let fields: Vec<String> = redis::from_redis_value(fields).map_err(corrupt)?;
        let rest = key
            .strip_prefix(prefix)
            .ok_or_else(|| bad(format!("{key} is not under {prefix}")))?;
        let pairs = fields.chunks_exact(2).filter_map(|pair| match pair {
            [field, value] => Some((field.as_str(), value.as_str())),
            _ => None,
        });
        if rest == "users" {
            for (date, count) in pairs {
                let count = count.parse().map_err(|_| bad(format!("{key}: {count}")))?;
                users.push((date.to_owned(), count));
            }
            continue;
        }
        let (date, endpoint) = match (rest.get(..10), rest.get(11..)) {
            (Some(date), Some(endpoint)) => (date, endpoint),
            _ => return Err(bad(format!("{key} names no date and endpoint"))),
        };
        let mut row = UsageRow {
            date: date.to_owned(),
            endpoint: endpoint.to_owned(),
            plan: String::new(),
            counters: Counters::default(),
        };
        for (field, value) in pairs {
            if field == "plan" {
                row.plan = value.to_owned();
            } else {
                let value = value.parse().map_err(|_| bad(format!("{key}: {value}")))?;
                row.counters.set(field, value);
            }
        }
        rows.push(row);
    }
    Ok((rows, users))
}

impl RedisUsageStore {
    async fn unflushed_async(&self, tenant: &str) -> Result<Unflushed, StoreError> {
        let base = self.tenant_base(tenant);
        let mut connection = self.shared.connection.clone();
        let answer: Value = self
            .shared
            .unflushed
            .key(format!("{base}dirty"))
            .key(format!("{base}staging"))
            .key(format!("{base}stages"))
            .arg(&base)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let items: Vec<Value> = redis::from_redis_value(answer).map_err(corrupt)?;
        let mut items = items.into_iter();
        let generation: u64 = match items.next() {
            Some(value) => redis::from_redis_value(value).map_err(corrupt)?,
            None => return Err(bad(format!("no unflushed answer for {tenant}"))),
        };
        let live: Vec<Value> = match items.next() {
            Some(value) => redis::from_redis_value(value).map_err(corrupt)?,
            None => Vec::new(),
        };
        let (live, _) = parse_hashes(live, &base)?;
        let mut staged = Vec::new();
        while let (Some(id), Some(keys)) = (items.next(), items.next()) {
            let id: String = redis::from_redis_value(id).map_err(corrupt)?;
            let keys: Vec<Value> = redis::from_redis_value(keys).map_err(corrupt)?;
            let (mut rows, mut users) = parse_hashes(keys, &format!("{base}flush:{id}:"))?;
            rows.sort_by(|a, b| (&a.date, &a.endpoint).cmp(&(&b.date, &b.endpoint)));
            users.sort();
            staged.push(Snapshot {
                tenant: tenant.to_owned(),
                flush_id: id,
                rows,
                users,
            });
        }
        Ok(Unflushed {
            generation,
            live,
            staged,
        })
    }
}

impl UnflushedUsage for RedisUsageStore {
    async fn unflushed(&self, tenant: &str) -> Result<Unflushed, StoreError> {
        self.unflushed_async(tenant).await
    }

    async fn generations(&self, tenants: &[String]) -> Result<Vec<u64>, StoreError> {
        // One GET per tenant (their keys are in different slots on a cluster).
        let mut generations = Vec::with_capacity(tenants.len());
        for chunk in tenants.chunks(CONCURRENCY) {
            let reads = chunk.iter().map(|tenant| {
                let mut connection = self.shared.connection.clone();
                let key = format!("{}stages", self.tenant_base(tenant));
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<u64>>(&mut connection)
                        .await
                        .map(|n| n.unwrap_or(0))
                        .map_err(unavailable)
                }
            });
            generations.extend(try_join_all(reads).await?);
        }
        Ok(generations)
    }

    async fn live_users(
        &self,
        tenant: &str,
        dates: &[String],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let base = self.tenant_base(tenant);
        let mut pipeline = redis::pipe();
        for date in dates {
            pipeline.cmd("EXISTS").arg(format!("{base}users:{date}"));
            pipeline.cmd("PFCOUNT").arg(format!("{base}users:{date}"));
        }
        let mut connection = self.shared.connection.clone();
        let answers: Vec<u64> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(dates
            .iter()
            .zip(answers.chunks_exact(2))
            .filter_map(|(date, answer)| match answer {
                [1, users] => Some((date.clone(), *users)),
                _ => None,
            })
            .collect())
    }
}
