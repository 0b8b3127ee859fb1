//! The 30-day usage graph as server-rendered SVG: one group per day (`data-testid=
//! "usage-point"`, with the day's figures as attributes and a `<title>` tooltip), its bar the
//! day's requests with the errors stacked on top in another colour. No script draws it, so
//! what the server computed is what the browser shows, and a test can count and read the bars
//! in the DOM.

use std::fmt::Write as _;

use super::format::{esc, int};
use crate::services::dashboard::DayView;

const WIDTH: u64 = 720;
const HEIGHT: u64 = 180;
const TOP: u64 = 16;
/// Space between two bars.
const GAP: u64 = 6;

/// The SVG of `days` (meant for 30; any number fits the width).
pub fn usage_chart(days: &[DayView]) -> String {
    let peak = days.iter().map(|d| d.requests).max().unwrap_or(0).max(1);
    let total: u64 = days.iter().map(|d| d.requests).sum();
    let errors: u64 = days.iter().map(|d| d.errors).sum();
    let slot = WIDTH / (days.len().max(1) as u64);
    let bar = slot.saturating_sub(GAP).max(1);
    let plot = HEIGHT - TOP;
    let mut svg = String::with_capacity(8_192);
    let _ = write!(
        svg,
        r#"<svg data-testid="usage-chart" class="chart" viewBox="0 0 {WIDTH} {h}" role="img" aria-labelledby="chart-title chart-desc" data-points="{n}"><title id="chart-title">Requests per day, last {n} days</title><desc id="chart-desc">{total} requests, {errors} of them errors; the busiest day had {peak_text}.</desc>"#,
        h = HEIGHT + 20,
        n = days.len(),
        total = int(total),
        errors = int(errors),
        peak_text = int(days.iter().map(|d| d.requests).max().unwrap_or(0)),
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/><text class="label" x="0" y="11">{}</text>"#,
        int(peak)
    );
    for (i, day) in days.iter().enumerate() {
        let x = i as u64 * slot + (slot - bar) / 2;
        let height = |n: u64| n.saturating_mul(plot).div_ceil(peak);
        let all = height(day.requests);
        let bad = height(day.errors.min(day.requests));
        let _ = write!(
            svg,
            r#"<g class="day" data-testid="usage-point" data-date="{date}" data-requests="{r}" data-errors="{e}"><title>{date}: {rt} requests, {et} errors</title><rect class="hit" x="{hx}" y="0" width="{slot}" height="{HEIGHT}"/><rect class="ok" x="{x}" y="{y}" width="{bar}" height="{all}"/><rect class="err" x="{x}" y="{y}" width="{bar}" height="{bad}"/></g>"#,
            date = esc(&day.date),
            r = day.requests,
            e = day.errors,
            rt = int(day.requests),
            et = int(day.errors),
            hx = i as u64 * slot,
            y = HEIGHT - all,
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            svg,
            r#"<text class="label" x="0" y="{y}">{}</text><text class="label end" x="{WIDTH}" y="{y}">{}</text>"#,
            esc(&first.date),
            esc(&last.date),
            y = HEIGHT + 16,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn day(date: &str, requests: u64, errors: u64) -> DayView {
        DayView {
            date: date.into(),
            requests,
            errors,
            errors_4xx: errors,
            errors_5xx: 0,
            active_users: 0,
        }
    }

    #[test]
    fn one_group_per_day_scaled_to_the_busiest() {
        let mut days: Vec<DayView> = (1..=30)
            .map(|d| day(&format!("2026-11-{d:02}"), 0, 0))
            .collect();
        days[3] = day("2026-11-04", 200, 50);
        days[29] = day("2026-11-30", 100, 0);
        let svg = usage_chart(&days);
        assert_eq!(svg.matches(r#"data-testid="usage-point""#).count(), 30);
        assert!(svg.contains(r#"data-points="30""#));
        // The busiest day fills the plot (164 px), its errors a quarter of it (41 px).
        assert!(svg.contains(
            r#"data-date="2026-11-04" data-requests="200" data-errors="50"><title>2026-11-04: 200 requests, 50 errors</title>"#
        ));
        assert!(svg.contains(r#"class="ok" x="75" y="16" width="18" height="164""#));
        assert!(svg.contains(r#"class="err" x="75" y="16" width="18" height="41""#));
        assert!(svg.contains(r#"class="ok" x="699" y="98" width="18" height="82""#));
        assert!(svg.contains("300 requests, 50 of them errors"));
    }
}
