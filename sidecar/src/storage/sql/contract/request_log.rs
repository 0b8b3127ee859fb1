//! [`RequestLogStore`]'s contract: what is written is read back exactly (user hashes of all 64
//! bits included), newest first, one tenant only, at most `limit`; maintenance keeps the
//! retention and creates what today's writes need.

use std::collections::HashSet;

use tollgate_filter::usage::RequestLogEntry;

use crate::storage::sql::request_log::DAY_MS;
use crate::storage::sql::{Database, RequestLogStore};

/// 2026-11-26 as days since 1970.
const TODAY: i64 = 20_783;

fn entry(
    tenant: &str,
    day: i64,
    offset_ms: u64,
    endpoint: &str,
    user: Option<u64>,
) -> RequestLogEntry {
    RequestLogEntry {
        time_ms: day as u64 * DAY_MS + offset_ms,
        tenant: tenant.into(),
        endpoint: endpoint.into(),
        status: 201,
        bytes_in: 10 + offset_ms,
        bytes_out: 20,
        latency_ms: 3,
        user,
    }
}

pub(in crate::storage::sql) async fn writes_reads_and_keeps_the_retention(database: &Database) {
    assert_eq!(database.maintain(TODAY, 2).await.unwrap(), 0);
    let entries = vec![
        entry("acme", TODAY - 2, 5, "GET /old", None),
        entry("acme", TODAY, 1, "GET /a\tb", Some(u64::MAX)),
        entry("acme", TODAY, 9, "GET /b", Some(7)),
        entry("acme", TODAY, 9, "GET /a", None),
        entry("globex", TODAY, 20, "GET /g", None),
    ];
    let mut known = HashSet::new();
    assert_eq!(database.write(&entries, &mut known).await.unwrap(), 5);
    assert_eq!(database.write(&[], &mut known).await.unwrap(), 0);
    let latest = database.latest("acme", 3).await.unwrap();
    let want: Vec<RequestLogEntry> = [3, 2, 1]
        .iter()
        .filter_map(|&n| entries.get(n).cloned())
        .collect();
    assert_eq!(latest, want);
    assert_eq!(database.latest("acme", 10).await.unwrap().len(), 4);
    assert_eq!(database.latest("nobody", 10).await.unwrap(), []);
    // A day later with one day of retention, the oldest day goes (a partition or its rows).
    let removed = database.maintain(TODAY + 1, 1).await.unwrap();
    assert!(removed >= 1, "{removed}");
    let left = database.latest("acme", 10).await.unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|e| e.endpoint != "GET /old"), "{left:?}");
}
