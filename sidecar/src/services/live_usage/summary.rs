//! The dashboard's summary ([`UsageQueries::usage_summary`]) with the pending usage added,
//! without reading every row of the range.
//!
//! The database folds the range in SQL and hands back its top `top + EXTRA` endpoints. Adding
//! the pending rows (endpoints `U`, at most [`EXTRA`] of them) keeps that exact: an endpoint
//! outside `U` among the true top `top` has fewer than `top` endpoints outside `U` ahead of it
//! in the database's order (adding pending usage only moves endpoints of `U` up), so it is
//! among the database's first `top + |U|`. An endpoint of `U` the list does not hold has at
//! most the list's last count in the database; if even that plus its pending usage cannot
//! reach the `top`-th total it is rightly left out, else (or with more than [`EXTRA`] pending
//! endpoints) the summary is folded from every row instead ([`merge_summary`] says `None`).

use std::collections::{BTreeMap, HashMap};

use crate::storage::sql::query::Counts;
use crate::storage::sql::summary::{UsageSummary, rank};
use crate::storage::usage::Counters;

/// The endpoints asked of the database beyond `top`, for pending ones to rank against.
pub const EXTRA: usize = 32;

/// `summary` (the database's, its top `asked` endpoints) with `pending` (`(date, endpoint,
/// counters)`) added, its days from `from` to `to`, cut to the `top` endpoints; `None` when
/// that cannot be told exactly from the summary.
pub fn merge_summary(
    summary: UsageSummary,
    asked: usize,
    pending: &[(String, String, Counters)],
    from: &str,
    to: &str,
    top: usize,
) -> Option<UsageSummary> {
    let pending: Vec<&(String, String, Counters)> = pending
        .iter()
        .filter(|(date, _, _)| date.as_str() >= from && date.as_str() <= to)
        .collect();
    let mut days: BTreeMap<String, Counts> = summary.days.into_iter().collect();
    let mut by_endpoint: HashMap<&str, Counts> = HashMap::new();
    for (date, endpoint, counters) in &pending {
        let counts = super::counts(counters);
        days.entry(date.clone()).or_default().add(&Counts {
            latency_buckets: Vec::new(),
            ..counts.clone()
        });
        by_endpoint
            .entry(endpoint.as_str())
            .or_default()
            .add(&counts);
    }
    if by_endpoint.len() > asked.saturating_sub(top) {
        return None;
    }
    // A full list may have left out endpoints with at most its last count.
    let full = summary.top_endpoints.len() >= asked;
    let floor = summary
        .top_endpoints
        .last()
        .map_or(0, |(_, counts)| counts.requests);
    let mut endpoints: HashMap<String, Counts> = summary.top_endpoints.into_iter().collect();
    let mut unsure: Vec<u64> = Vec::new();
    for (endpoint, counts) in by_endpoint {
        match endpoints.get_mut(endpoint) {
            Some(known) => known.add(&counts),
            None => {
                if full {
                    unsure.push(floor.saturating_add(counts.requests));
                }
                endpoints.insert(endpoint.to_owned(), counts);
            }
        }
    }
    let ranked = rank(endpoints.into_iter().collect(), top);
    if !unsure.is_empty() {
        let cut = if ranked.len() < top {
            0
        } else {
            ranked.last().map_or(0, |(_, counts)| counts.requests)
        };
        if unsure.iter().any(|&most| most >= cut) {
            return None;
        }
    }
    Some(UsageSummary {
        days: days.into_iter().collect(),
        top_endpoints: ranked,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use proptest::prelude::*;

    use super::*;
    use crate::services::live_usage::merge;
    use crate::storage::sql::query::DailyRow;

    fn counters(requests: u64) -> Counters {
        let mut c = Counters {
            requests,
            errors_5xx: requests / 3,
            ..Counters::default()
        };
        c.latency_buckets[1] = requests;
        c
    }

    fn row(date: &str, endpoint: &str, requests: u64) -> DailyRow {
        DailyRow {
            date: date.into(),
            endpoint: endpoint.into(),
            counts: super::super::counts(&counters(requests)),
        }
    }

    proptest! {
        /// Whenever it answers, the merged summary equals the fold of every row with the
        /// pending usage added; when the pending endpoints are among the listed ones it
        /// always answers.
        #[test]
        fn equals_the_fold_of_every_row(
            flushed in prop::collection::vec((0u8..3, 0u8..60, 1u64..50), 0..120),
            more in prop::collection::vec((0u8..4, 0u8..60, 1u64..80), 0..12),
            top in 1usize..6,
        ) {
            let date = |d: u8| format!("2026-12-0{}", d + 1);
            let rows: Vec<DailyRow> = flushed
                .iter()
                .map(|&(d, e, n)| row(&date(d), &format!("GET /e{e}"), n))
                .collect();
            // The database's own merge of duplicate keys, as its GROUP BY does.
            let rows = merge(rows, &[], "2026-12-01", "2026-12-09");
            let pending: Vec<(String, String, Counters)> = more
                .iter()
                .map(|&(d, e, n)| (date(d), format!("GET /e{e}"), counters(n)))
                .collect();
            let (from, to) = ("2026-12-01", "2026-12-03");
            let asked = top + EXTRA;
            let in_range: Vec<DailyRow> =
                rows.iter().filter(|r| r.date.as_str() <= to).cloned().collect();
            let database = UsageSummary::fold(&in_range, asked);
            let truth = UsageSummary::fold(&merge(in_range, &pending, from, to), top);
            let listed = database.top_endpoints.len() < asked
                || pending.iter().all(|(_, e, _)| database.top_endpoints.iter().any(|(n, _)| n == e));
            match merge_summary(database, asked, &pending, from, to, top) {
                Some(merged) => prop_assert_eq!(merged, truth),
                None => prop_assert!(!listed, "listed pending endpoints need no slow path"),
            }
        }
    }

    #[test]
    fn a_pending_endpoint_that_may_climb_past_the_list_asks_for_every_row() {
        // The database listed 2 endpoints (full); a third, unlisted, may hold up to 10 there.
        let summary = UsageSummary {
            days: vec![],
            top_endpoints: vec![
                ("GET /a".into(), super::super::counts(&counters(20))),
                ("GET /b".into(), super::super::counts(&counters(10))),
            ],
        };
        let pending = vec![("2026-12-01".into(), "GET /c".into(), counters(15))];
        assert_eq!(
            merge_summary(summary.clone(), 2, &pending, "2026-12-01", "2026-12-01", 1),
            None,
            "10 + 15 could pass GET /a's 20"
        );
        let small = vec![("2026-12-01".into(), "GET /c".into(), counters(5))];
        let merged = merge_summary(summary, 2, &small, "2026-12-01", "2026-12-01", 1).unwrap();
        assert_eq!(merged.top_endpoints[0].0, "GET /a");
    }
}
