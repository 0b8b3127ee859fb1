//! The dashboard's HTML, rendered on the server: the page shell, the panel the script
//! refreshes (`GET /dashboard/panel`), the sign-in form, the operator's overview and short
//! message pages. Every figure is text; the graphics (quota bar, [`super::chart`]) are SVG with
//! the same figures in their accessible names. Everything user-supplied is escaped ([`esc`]).

use std::fmt::Write as _;

use tollgate_filter::registry::Overage;

use super::chart::usage_chart;
use super::format::{esc, int, money, time};
use crate::services::dashboard::forecast::Forecast;
use crate::services::dashboard::{DashboardData, OverviewRow, QuotaView};

/// A whole page around `body`.
fn shell(title: &str, refresh_ms: Option<u64>, header: &str, body: &str) -> String {
    let script = match refresh_ms {
        Some(_) => r#"<script src="/dashboard/assets/dashboard.js" defer></script>"#,
        None => "",
    };
    let refresh = refresh_ms.map_or(String::new(), |ms| format!(r#" data-refresh-ms="{ms}""#));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/dashboard/assets/dashboard.css">{script}</head>
<body{refresh} data-refreshes="0"><header><span class="brand">Tollgate</span>{header}</header>
{body}
</body></html>
"#,
        title = esc(title),
    )
}

fn sign_out() -> &'static str {
    r#"<form method="post" action="/dashboard/sign-out" class="sign-out"><button type="submit">Sign out</button></form>"#
}

/// The tenant's dashboard page.
pub fn tenant_page(data: &DashboardData, refresh_ms: u64) -> String {
    let header = format!(
        r#"<span class="who">Usage of <strong data-testid="tenant">{}</strong>{}</span>{}"#,
        esc(&data.tenant),
        data.plan
            .as_deref()
            .map_or(String::new(), |p| format!(" · plan {}", esc(p))),
        sign_out()
    );
    let body = format!(
        r#"<main id="panel" aria-live="polite">{}</main>"#,
        panel(data, refresh_ms)
    );
    shell(
        &format!("Usage · {}", data.tenant),
        Some(refresh_ms),
        &header,
        &body,
    )
}

/// The refreshed part of the page.
pub fn panel(data: &DashboardData, refresh_ms: u64) -> String {
    let mut html = String::with_capacity(16_384);
    html.push_str(&quota_section(data));
    html.push_str(&forecast_section(data));
    let _ = write!(
        html,
        r#"<section><h2>Requests, last {} days</h2>{}<p class="legend"><span class="key ok"></span> requests <span class="key err"></span> errors (4xx and 5xx)</p>{}</section>"#,
        data.days.len(),
        usage_chart(&data.days),
        daily_table(data)
    );
    html.push_str(&endpoints_table(data));
    let _ = write!(
        html,
        r#"<section class="users"><h2>Active users</h2><p><span data-testid="active-users">{}</span> distinct users today.</p></section>"#,
        int(data.active_users_today)
    );
    let _ = write!(
        html,
        r#"<p class="updated">Updated <time data-testid="updated-at" datetime="{at}">{text}</time>; refreshes every {s} s.</p>"#,
        at = data.generated_at,
        text = time(data.generated_at),
        s = refresh_ms.div_ceil(1000),
    );
    html
}

fn quota_section(data: &DashboardData) -> String {
    let q: &QuotaView = &data.quota;
    let percent = q.percent_used.unwrap_or(0.0);
    let max = if percent > 100.0 {
        percent.ceil()
    } else {
        100.0
    };
    let text = match (q.monthly_quota, q.left) {
        (Some(quota), Some(left)) => format!(
            r#"<span data-testid="quota-percent">{percent:.2} %</span> used: <span data-testid="quota-used">{}</span> of <span data-testid="quota-limit">{}</span> requests, <span data-testid="quota-left">{}</span> left."#,
            int(q.used),
            int(quota),
            int(left)
        ),
        _ => format!(
            r#"<span data-testid="quota-used">{}</span> requests so far; this plan has no monthly quota."#,
            int(q.used)
        ),
    };
    let valuetext = match q.monthly_quota {
        Some(_) => format!("{percent:.2} % of the monthly quota used"),
        None => "no monthly quota".to_owned(),
    };
    format!(
        r#"<section><h2>This billing period</h2><div class="quota-bar" data-testid="quota-bar" role="progressbar" aria-label="Monthly quota used" aria-valuemin="0" aria-valuemax="{max}" aria-valuenow="{percent:.2}" aria-valuetext="{valuetext}"><svg viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true"><rect class="track" width="100" height="6"/><rect class="{class}" width="{fill:.2}" height="6"/></svg></div><p>{text} The period runs from <time datetime="{start}">{start}</time> and ends on <time data-testid="period-end" datetime="{end_at}">{end_text}</time>.</p></section>"#,
        class = if percent >= 100.0 {
            "fill over"
        } else if percent >= 80.0 {
            "fill warn"
        } else {
            "fill"
        },
        fill = percent.min(100.0),
        start = esc(&data.period.start),
        end_at = data.period.end_at,
        end_text = time(data.period.end_at),
    )
}

fn forecast_section(data: &DashboardData) -> String {
    let f: &Forecast = &data.forecast;
    let Some(requests) = f.requests else {
        return r#"<section><h2>Forecast</h2><p data-testid="forecast">Too early in the period for a forecast.</p></section>"#.to_owned();
    };
    let mut text = format!(
        r#"At this pace, about <span data-testid="forecast-requests">{}</span> requests by the end of the period (an estimate: usage so far ÷ the share of the period elapsed)."#,
        int(requests)
    );
    match (data.quota.overage, data.quota.monthly_quota) {
        (Some(Overage::Bill), Some(_)) => {
            let over = f.overage_requests.unwrap_or(0);
            let _ = write!(
                text,
                r#" Forecast overage: <span data-testid="forecast-overage">{}</span> requests"#,
                int(over)
            );
            if let Some(amount) = &f.overage_amount {
                let _ = write!(
                    text,
                    r#", about <span data-testid="forecast-amount">{}</span>"#,
                    money(amount.amount, &amount.currency)
                );
            }
            text.push('.');
        }
        (Some(Overage::Block), Some(_)) => {
            if f.quota_reached {
                text.push_str(r#" <strong data-testid="forecast-runs-out">The quota is used up</strong>: requests are refused until the period ends."#);
            } else if let Some(day) = &f.quota_runs_out_on {
                let _ = write!(
                    text,
                    r#" The quota is forecast to run out on <time data-testid="forecast-runs-out" datetime="{d}">{d}</time>."#,
                    d = esc(day)
                );
            } else {
                text.push_str(" The quota is forecast to last the period.");
            }
        }
        _ => {}
    }
    format!(r#"<section><h2>Forecast</h2><p data-testid="forecast">{text}</p></section>"#)
}

fn daily_table(data: &DashboardData) -> String {
    let mut rows = String::new();
    for d in &data.days {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.date),
            int(d.requests),
            int(d.errors),
            int(d.active_users)
        );
    }
    format!(
        r#"<details><summary>Daily figures</summary><table data-testid="daily-table"><thead><tr><th scope="col">Day</th><th scope="col">Requests</th><th scope="col">Errors</th><th scope="col">Active users</th></tr></thead><tbody>{rows}</tbody></table></details>"#
    )
}

fn endpoints_table(data: &DashboardData) -> String {
    let mut rows = String::new();
    for e in &data.top_endpoints {
        let _ = write!(
            rows,
            r#"<tr data-endpoint="{name}"><th scope="row">{name}</th><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            int(e.requests),
            e.error_rate
                .map_or("–".to_owned(), |r| format!("{:.2} %", r * 100.0)),
            e.p95_ms.map_or("–".to_owned(), |p| format!("{p:.2} ms")),
            name = esc(&e.endpoint),
        );
    }
    if data.top_endpoints.is_empty() {
        rows.push_str(
            r#"<tr class="empty"><td colspan="4">No requests in the last 30 days.</td></tr>"#,
        );
    }
    format!(
        r#"<section><h2>Top endpoints, last {} days</h2><table data-testid="top-endpoints"><thead><tr><th scope="col">Endpoint</th><th scope="col">Calls</th><th scope="col">Error rate</th><th scope="col">p95 latency</th></tr></thead><tbody>{rows}</tbody></table></section>"#,
        data.days.len()
    )
}

/// The sign-in page, with `problem` said above the form.
pub fn sign_in(problem: Option<&str>) -> String {
    let problem = problem.map_or(String::new(), |p| {
        format!(
            r#"<p class="problem" role="alert" data-testid="problem">{}</p>"#,
            esc(p)
        )
    });
    let body = format!(
        r#"<main class="narrow"><h1>Sign in to your usage dashboard</h1>{problem}<form method="post" action="/dashboard/sign-in"><label for="credential">API key</label><input id="credential" name="credential" type="password" autocomplete="off" required><button type="submit">Sign in</button></form><p class="hint">Use one of your API keys, or the sign-in link your provider sent you. Operators sign in with the admin token for the overview of every tenant.</p></main>"#
    );
    shell("Sign in · Tollgate", None, "", &body)
}

/// A page saying `message` (a refused link, a forbidden page).
pub fn message(title: &str, message: &str) -> String {
    let body = format!(
        r#"<main class="narrow"><h1>{}</h1><p role="alert" data-testid="problem">{}</p><p><a href="/dashboard">Sign in</a></p></main>"#,
        esc(title),
        esc(message)
    );
    shell(title, None, "", &body)
}

/// The operator's overview: every tenant, the largest share of quota used first.
pub fn overview(rows: &[OverviewRow], generated_at: u64) -> String {
    let mut body = String::new();
    for r in rows {
        let _ = write!(
            body,
            r#"<tr data-tenant="{t}"><th scope="row">{t}</th><td>{plan}</td><td>{status}</td><td>{used}</td><td>{quota}</td><td>{percent}</td><td>{end}</td></tr>"#,
            t = esc(&r.tenant),
            plan = esc(&r.plan),
            status = match r.status {
                tollgate_filter::registry::TenantStatus::Active => "active",
                tollgate_filter::registry::TenantStatus::Suspended => "suspended",
            },
            used = int(r.used),
            quota = r.monthly_quota.map_or("–".to_owned(), int),
            percent = r
                .percent_used
                .map_or("–".to_owned(), |p| format!("{p:.2} %")),
            end = esc(&r.period_end),
        );
    }
    let html = format!(
        r#"<main><h1>All tenants by share of quota used</h1><table data-testid="tenants"><thead><tr><th scope="col">Tenant</th><th scope="col">Plan</th><th scope="col">Status</th><th scope="col">Requests this period</th><th scope="col">Monthly quota</th><th scope="col">Used</th><th scope="col">Period ends</th></tr></thead><tbody>{body}</tbody></table><p class="updated">Updated {}. Tenant dashboards open through sign-in links: <code>POST /v1/admin/tenants/{{id}}/dashboard-link</code>.</p></main>"#,
        time(generated_at)
    );
    shell(
        "Tenants · Tollgate",
        None,
        &format!(
            r#"<span class="who">Operator overview</span>{}"#,
            sign_out()
        ),
        &html,
    )
}
