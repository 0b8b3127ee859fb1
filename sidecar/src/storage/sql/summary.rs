//! A tenant's usage over a date range folded for the dashboard ([`UsageSummary`],
//! [`UsageQueries::usage_summary`](super::UsageQueries::usage_summary)): totals per day, and
//! the top endpoints by calls with their histograms. The databases fold in SQL and read the
//! histograms of the top endpoints only; [`UsageSummary::fold`] is the same from rows.

use std::collections::{BTreeMap, HashMap};

use super::query::{Counts, DailyRow};

/// Per-day totals and the top endpoints of a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageSummary {
    /// `(YYYY-MM-DD, totals)` of every date with usage, oldest first; the totals carry no
    /// histogram.
    pub days: Vec<(String, Counts)>,
    /// The endpoints with the most calls, most first (ties by name, byte order), at most the
    /// number asked for, with their merged histograms.
    pub top_endpoints: Vec<(String, Counts)>,
}

impl UsageSummary {
    /// The summary of `rows` with the `top` endpoints.
    pub fn fold(rows: &[DailyRow], top: usize) -> UsageSummary {
        let mut days: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut endpoints: HashMap<&str, Counts> = HashMap::new();
        for row in rows {
            let day = days.entry(row.date.as_str()).or_default();
            day.add(&Counts {
                latency_buckets: Vec::new(),
                ..row.counts.clone()
            });
            endpoints
                .entry(row.endpoint.as_str())
                .or_default()
                .add(&row.counts);
        }
        UsageSummary {
            days: days
                .into_iter()
                .map(|(date, counts)| (date.to_owned(), counts))
                .collect(),
            top_endpoints: rank(
                endpoints
                    .into_iter()
                    .map(|(endpoint, counts)| (endpoint.to_owned(), counts))
                    .collect(),
                top,
            ),
        }
    }
}

/// `endpoints`, most calls first (ties by name), at most `top`.
pub(crate) fn rank(mut endpoints: Vec<(String, Counts)>, top: usize) -> Vec<(String, Counts)> {
    endpoints.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    endpoints.truncate(top);
    endpoints
}

/// Adds the histograms of `rows` (endpoint, buckets) into the matching `top` entries.
pub(crate) fn add_histograms(top: &mut [(String, Counts)], rows: Vec<(String, Vec<u64>)>) {
    let index: HashMap<String, usize> = top
        .iter()
        .enumerate()
        .map(|(i, (endpoint, _))| (endpoint.clone(), i))
        .collect();
    for (endpoint, buckets) in rows {
        if let Some((_, counts)) = index.get(&endpoint).and_then(|&i| top.get_mut(i)) {
            counts.add(&Counts {
                latency_buckets: buckets,
                ..Counts::default()
            });
        }
    }
}
