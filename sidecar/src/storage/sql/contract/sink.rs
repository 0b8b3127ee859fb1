//! [`UsageSink`]'s contract: many chunks of rows in, every sum exact, a flush id applied
//! once, the plan kept unless the snapshot brings none, distinct users kept as the larger count.

use sqlx::Row as _;
use tollgate_filter::usage::LATENCY_BUCKETS;

use crate::storage::sql::sink::Applied;
use crate::storage::sql::{Database, UsageQueries, UsageSink};
use crate::storage::usage::{Counters, Snapshot, UsageRow};

/// `n` rows of tenant "t" (more than one chunk), row `i` with `i + 1` requests.
fn snapshot(flush_id: &str, n: usize) -> Snapshot {
    let rows = (0..n)
        .map(|i| {
            let mut counters = Counters {
                requests: i as u64 + 1,
                bytes_in: 10,
                latency_ms_sum: 7,
                ..Counters::default()
            };
            counters.latency_buckets[i % LATENCY_BUCKETS] = 1;
            UsageRow {
                date: "2026-11-26".into(),
                endpoint: format!("GET /e{i:06}"),
                plan: if i % 2 == 0 {
                    "pro".into()
                } else {
                    String::new()
                },
                counters,
            }
        })
        .collect();
    Snapshot {
        tenant: "t".into(),
        flush_id: flush_id.into(),
        rows,
        users: vec![("2026-11-26".into(), 9)],
    }
}

/// Applies two snapshots of `n` rows (and the first again), then checks every row's sums.
pub(in crate::storage::sql) async fn adds_every_row_of_many_chunks(database: &Database, n: usize) {
    assert_eq!(
        database.apply(&snapshot("a", n)).await.unwrap(),
        Applied::Now
    );
    assert_eq!(
        database.apply(&snapshot("b", n)).await.unwrap(),
        Applied::Now
    );
    assert_eq!(
        database.apply(&snapshot("a", n)).await.unwrap(),
        Applied::Before
    );
    let sql = "SELECT count(*), CAST(sum(requests) AS bigint), CAST(sum(bytes_in) AS bigint), \
               CAST(sum(CASE WHEN plan = 'pro' THEN 1 ELSE 0 END) AS bigint) FROM api_usage_daily";
    let (rows, requests, bytes, pro): (i64, i64, i64, i64) = match database {
        Database::Postgres(pool) => {
            let row = sqlx::query(sql).fetch_one(pool).await.unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3))
        }
        Database::Sqlite(pool) => {
            let row = sqlx::query(sql).fetch_one(pool).await.unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3))
        }
    };
    let n = n as i64;
    assert_eq!(rows, n);
    assert_eq!(requests, 2 * n * (n + 1) / 2);
    assert_eq!(bytes, 2 * 10 * n);
    assert_eq!(pro, (n + 1) / 2);
    let last = format!("GET /e{:06}", n - 1);
    let buckets: Vec<i64> = match database {
        Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT latency_buckets FROM api_usage_daily WHERE endpoint = $1")
                .bind(&last)
                .fetch_one(pool)
                .await
                .unwrap()
        }
        Database::Sqlite(pool) => {
            let text: String = sqlx::query_scalar(
                "SELECT latency_buckets FROM api_usage_daily WHERE endpoint = ?",
            )
            .bind(&last)
            .fetch_one(pool)
            .await
            .unwrap();
            serde_json::from_str(&text).unwrap()
        }
    };
    let mut want = vec![0; LATENCY_BUCKETS];
    want[(n as usize - 1) % LATENCY_BUCKETS] = 2;
    assert_eq!(buckets, want);
}

/// The day's distinct users are a running count: a smaller (older) count does not lower it.
pub(in crate::storage::sql) async fn users_keep_the_larger_count(database: &Database) {
    let users = |flush_id: &str, users: u64| Snapshot {
        tenant: "u".into(),
        flush_id: flush_id.into(),
        rows: Vec::new(),
        users: vec![("2026-11-26".into(), users)],
    };
    for (id, count) in [("u1", 5), ("u2", 3), ("u3", 8)] {
        assert_eq!(
            database.apply(&users(id, count)).await.unwrap(),
            Applied::Now
        );
    }
    let read = database
        .active_users("u", "2026-11-26", "2026-11-26")
        .await
        .unwrap();
    assert_eq!(read.get("2026-11-26"), Some(&8));
}
