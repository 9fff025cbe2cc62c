//! The dashboard on the HTTP listener: the signing funnel, the 24-hour curve of charge
//! success, retention by signing month, notice channels, and revenue with MRR by month, drawn
//! as SVG on the server (no script, nothing fetched from the network).
//!
//! A merchant signs in with one of its API keys, the operator with the operator key; the
//! answer is a session cookie (see [`Authenticator::open_session`]) and the dashboard then
//! shows what `AnalyticsService` would answer that caller: every figure on the page is
//! computed by the same `app` functions the RPCs call, and carries its number in `data-*`
//! attributes for checking.
use crate::app::{self, RETENTION_MONTHS, Scope};
use autodebit_domain::money::display as money;
use autodebit_proto::analytics::v1 as apb;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Authenticator, Principal};
use axum::extract::{DefaultBodyLimit, Form, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::{BTreeMap, HashMap};

/// The session cookie's name.
pub const COOKIE: &str = "autodebit_session";
/// How long a session lasts, on the platform's clock.
const SESSION_MS: i64 = 12 * 3_600_000;
/// Months of revenue the trend shows, ending with the current one.
const TREND_MONTHS: usize = 12;

#[derive(Clone)]
pub struct Dashboard {
    pub platform: Platform,
    pub auth: Authenticator,
    /// Mark the cookie `Secure` (the public URL is https).
    pub secure: bool,
}

pub fn routes(d: Dashboard) -> axum::Router {
    axum::Router::new()
        .route("/dashboard", get(show))
        .route("/dashboard/session", post(sign_in))
        .route("/dashboard/signout", post(sign_out))
        // A key is short; nothing larger is read.
        .layer(DefaultBodyLimit::max(4096))
        .with_state(d)
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn set_cookie(value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("a cookie of ASCII")
}

async fn sign_in(State(d): State<Dashboard>, Form(form): Form<HashMap<String, String>>) -> Response {
    let key = form.get("key").map(|k| k.trim()).unwrap_or_default();
    if key.is_empty() {
        return sign_in_page(StatusCode::BAD_REQUEST, Some("key: paste an API key or the operator key"));
    }
    let expires = d.platform.clock.now_ms() + SESSION_MS;
    match d.auth.open_session(key, expires).await {
        Ok((_, cookie)) => {
            let mut r = Redirect::to("/dashboard").into_response();
            r.headers_mut().insert(header::SET_COOKIE, set_cookie(&cookie, SESSION_MS / 1000, d.secure));
            r
        }
        Err(e) if e.code() == tonic::Code::Unauthenticated => {
            sign_in_page(StatusCode::UNAUTHORIZED, Some("key: not a valid key of this platform"))
        }
        Err(e) => sign_in_page(autodebit_runtime::grpc::http_status(e.code()), Some(e.message())),
    }
}

async fn sign_out(State(d): State<Dashboard>) -> Response {
    let mut r = Redirect::to("/dashboard").into_response();
    r.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, d.secure));
    r
}

/// The dashboard for a signed-in caller, or the sign-in form. The session is checked before
/// the query is read.
async fn show(State(d): State<Dashboard>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let Some(cookie) = cookie_of(&headers) else {
        return sign_in_page(StatusCode::OK, None);
    };
    let who = match d.auth.session(cookie, d.platform.clock.now_ms()).await {
        Ok(who) => who,
        Err(e) => return sign_in_page(StatusCode::UNAUTHORIZED, Some(e.message())),
    };
    let params: Vec<(String, String)> = match query_pairs(query.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return bad_parameter("query", &e),
    };
    let mut merchant = String::new();
    let (mut from_ms, mut until_ms) = (0, 0);
    for (name, value) in &params {
        match name.as_str() {
            "merchant" => merchant = value.clone(),
            "from" | "until" if value.is_empty() => {}
            "from" | "until" => match day_start_ms(value) {
                Some(ms) if name == "from" => from_ms = ms,
                Some(ms) => until_ms = ms,
                None => return bad_parameter(name, "a date as YYYY-MM-DD"),
            },
            other => return bad_parameter(other, "is not a parameter of this page"),
        }
    }
    let range = apb::TimeRange { from_ms, until_ms };
    let scope = match Scope::of(&who, &merchant, Some(&range)) {
        Ok(s) => s,
        Err(b) => {
            let field = if b.field == "merchant_id" { "merchant" } else { "from" };
            return bad_parameter(field, &b.problem);
        }
    };
    match page(&d, &who, &scope).await {
        Ok(html) => {
            let mut r = Html(html.into_string()).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            let status = autodebit_runtime::grpc::store_error(e);
            (autodebit_runtime::grpc::http_status(status.code()), status.message().to_string()).into_response()
        }
    }
}

/// `a=1&b=2` into pairs, percent-decoded; no parameter twice.
fn query_pairs(q: &str) -> Result<Vec<(String, String)>, String> {
    let pairs: Vec<(String, String)> = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{q}").parse().map_err(|_| "malformed")?,
    )
    .map_err(|e| e.body_text())?
    .0;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(pairs)
}

/// Midnight UTC of `YYYY-MM-DD`, in ms.
fn day_start_ms(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?).timestamp_millis()).filter(|ms| *ms >= 0)
}

fn bad_parameter(name: &str, problem: &str) -> Response {
    let page = html! { (DOCTYPE) title { "400" } p id="error" { (name) ": " (problem) } };
    (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response()
}

fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "autodebit dashboard: sign in" } style { (PreEscaped(STYLE)) } }
            body {
                h1 { "autodebit dashboard" }
                @if let Some(e) = error { p id="error" class="error" { (e) } }
                form id="signin" method="post" action="/dashboard/session" {
                    label for="key" { "API key (a merchant's) or the operator key" }
                    input id="key" name="key" type="password" autocomplete="off" required;
                    button id="signin-submit" type="submit" { "Sign in" }
                }
            }
        }
    };
    (status, Html(page.into_string())).into_response()
}

/// Every figure of the page, asked of `app` exactly as the RPCs ask.
async fn page(d: &Dashboard, who: &Principal, scope: &Scope) -> Result<Markup, autodebit_eventstore::StoreError> {
    let store = &d.platform.store;
    let now = d.platform.clock.now_ms();
    let funnel = app::funnel(store, scope, "").await?;
    let hours = app::charge_stats(store, scope, "hour").await?;
    let cohorts = app::retention(store, scope, now).await?;
    let (channels, unsent) = app::notice_channels(store, scope).await?;
    let trend = revenue_trend(d, scope, now).await?;
    let title = match (who, &scope.merchant) {
        (Principal::Operator, None) => "All merchants".to_string(),
        (Principal::Operator, Some(m)) => format!("Merchant {m} (operator)"),
        (Principal::Merchant(m), _) => format!("Merchant {m}"),
    };
    let date = |ms: i64| autodebit_domain::clock::from_millis(ms).format("%Y-%m-%d").to_string();
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { "autodebit dashboard" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 id="who" { (title) }
                    form method="get" action="/dashboard" class="filters" {
                        @if matches!(who, Principal::Operator) {
                            label { "merchant " input name="merchant" value=(scope.merchant.clone().unwrap_or_default()); }
                        }
                        label { "from " input type="date" name="from" value=(if scope.from_ms > 0 { date(scope.from_ms) } else { String::new() }); }
                        label { "until " input type="date" name="until" value=(if scope.until_ms > 0 { date(scope.until_ms) } else { String::new() }); }
                        button type="submit" { "Apply" }
                    }
                    form method="post" action="/dashboard/signout" { button id="signout" type="submit" { "Sign out" } }
                }
                p class="asof" { "As of " (autodebit_domain::clock::from_millis(now).format("%Y-%m-%d %H:%M UTC")) }
                main {
                    section id="funnel" { h2 { "Signing funnel" } (funnel_chart(funnel.first())) }
                    section id="hourly" { h2 { "Charge success by hour of day (merchant's zone)" } (hour_chart(&hours)) }
                    section id="retention" { h2 { "Retention by signing month" } (retention_chart(&cohorts)) }
                    section id="channels" {
                        h2 { "Notices per channel" }
                        (channel_chart(&channels))
                        @if unsent > 0 { p class="note" data-unsent=(unsent) { (unsent) " not yet taken by any channel" } }
                    }
                    section id="revenue" { h2 { "Revenue and MRR by month" } (revenue_chart(&trend)) }
                }
            }
        }
    })
}

/// One month of the revenue trend: its range and, per currency, what `GetRevenue` answers
/// for it (summed over merchants for the operator's platform view).
struct Month {
    label: String,
    from_ms: i64,
    until_ms: i64,
    by_currency: BTreeMap<String, (i64, i64, i64)>,
}

async fn revenue_trend(d: &Dashboard, scope: &Scope, now: i64) -> Result<Vec<Month>, autodebit_eventstore::StoreError> {
    let end = if scope.until_ms > 0 { scope.until_ms.min(now + 1) } else { now + 1 };
    let last = autodebit_domain::clock::from_millis(end - 1).date_naive();
    let mut first = NaiveDate::from_ymd_opt(last.year(), last.month(), 1).expect("the first of a month");
    for _ in 1..TREND_MONTHS {
        first = first.checked_sub_months(chrono::Months::new(1)).expect("a month in range");
    }
    let mut months = Vec::with_capacity(TREND_MONTHS);
    let mut start = first;
    for _ in 0..TREND_MONTHS {
        let next = start.checked_add_months(chrono::Months::new(1)).expect("a month in range");
        let ms =
            |day: NaiveDate| Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight")).timestamp_millis();
        let (from_ms, until_ms) = (ms(start).max(0), ms(next).min(end));
        let month_scope = Scope { merchant: scope.merchant.clone(), from_ms, until_ms };
        let mut by_currency: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        if until_ms > from_ms {
            for r in app::revenue(&d.platform.store, &month_scope, now).await? {
                let e = by_currency.entry(r.currency).or_default();
                e.0 += r.gross;
                e.1 += r.net;
                e.2 += r.mrr;
            }
        }
        months.push(Month { label: start.format("%Y-%m").to_string(), from_ms, until_ms, by_currency });
        start = next;
    }
    Ok(months)
}

// === charts ===

const WIDTH: f64 = 640.0;
const BLUE: &str = "#2b6cb0";
const GREEN: &str = "#2f855a";
const ORANGE: &str = "#c05621";
const PURPLE: &str = "#6b46c1";
const GREY: &str = "#cbd5e0";

fn pct(bp: u32) -> String {
    format!("{}.{:02}%", bp / 100, bp % 100)
}

fn empty(what: &str) -> Markup {
    html! { p class="empty" { "No " (what) " in this range." } }
}

fn funnel_chart(row: Option<&apb::FunnelRow>) -> Markup {
    let Some(f) = row.filter(|f| f.opened > 0) else { return empty("signing sessions") };
    let steps = [
        ("opened", "Session opened", f.opened),
        ("page_viewed", "Page viewed", f.page_viewed),
        ("agreement_ticked", "Agreement ticked", f.agreement_ticked),
        ("signed", "Signed", f.signed),
    ];
    let (label_w, row_h) = (140.0, 34.0);
    let bar_w = WIDTH - label_w - 190.0;
    let height = row_h * steps.len() as f64 + 10.0;
    html! {
        svg class="chart" id="funnel-chart" width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)} role="img" {
            title { "Signing funnel: sessions at each step" }
            @for (i, (step, label, n)) in steps.iter().enumerate() {
                @let y = i as f64 * row_h + 5.0;
                @let w = bar_w * *n as f64 / f.opened as f64;
                @let previous = if i == 0 { *n } else { steps[i - 1].2 };
                text x=(label_w - 8.0) y=(y + 20.0) text-anchor="end" { (label) }
                rect class="bar" data-step=(step) data-value=(n) x=(label_w) y=(y) width=(format!("{w:.1}")) height=(row_h - 8.0) fill=(BLUE) {
                    title { (label) ": " (n) }
                }
                text x=(label_w + w + 6.0) y=(y + 20.0) {
                    (n)
                    @if i > 0 { " · " (pct(app::basis_points(*n as i64, previous as i64))) " of the step before" }
                }
            }
        }
        p class="legend" {
            "Besides: held for review " span data-step="held_for_review" { (f.held_for_review) }
            ", SMS challenged " span data-step="sms_challenged" { (f.sms_challenged) }
            ", abandoned " span data-step="abandoned" { (f.abandoned) }
            ", expired " span data-step="expired" { (f.expired) }
            ". Median time to sign " span data-step="median_ms_to_sign" data-value=(f.median_ms_to_sign) { (f.median_ms_to_sign / 1000) " s" } "."
        }
    }
}

fn hour_chart(rows: &[apb::ChargeStatsRow]) -> Markup {
    if rows.is_empty() {
        return empty("charges");
    }
    let (left, top, plot_h) = (44.0, 10.0, 180.0);
    let step = (WIDTH - left - 10.0) / 24.0;
    let max = rows.iter().map(|r| r.charges).max().unwrap_or(1).max(1) as f64;
    let by_hour: BTreeMap<u32, &apb::ChargeStatsRow> =
        rows.iter().filter_map(|r| r.group.parse::<u32>().ok().map(|h| (h, r))).collect();
    let settled = |r: &apb::ChargeStatsRow| r.succeeded + r.failed + r.rejected;
    let points: Vec<(f64, f64)> = by_hour
        .iter()
        .filter(|(_, r)| settled(r) > 0)
        .map(|(h, r)| {
            (left + (*h as f64 + 0.5) * step, top + plot_h * (1.0 - f64::from(r.success_rate_basis_points) / 10_000.0))
        })
        .collect();
    let line: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let height = top + plot_h + 30.0;
    html! {
        svg class="chart" id="hourly-chart" width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)} role="img" {
            title { "Charges (bars) and success rate (line) by hour of day" }
            @for (label, frac) in [("100%", 0.0), ("50%", 0.5), ("0%", 1.0)] {
                @let y = top + plot_h * frac;
                line x1=(left) x2=(WIDTH - 10.0) y1=(y) y2=(y) stroke=(GREY) {}
                text x=(left - 6.0) y=(y + 4.0) text-anchor="end" class="axis" { (label) }
            }
            @for (h, r) in &by_hour {
                @let bar_h = plot_h * r.charges as f64 / max;
                rect class="volume" data-hour=(r.group) data-value=(r.charges) x=(format!("{:.1}", left + *h as f64 * step + 2.0))
                    y=(format!("{:.1}", top + plot_h - bar_h)) width=(format!("{:.1}", step - 4.0)) height=(format!("{bar_h:.1}")) fill="#bee3f8" {
                    title { (r.group) ":00 — " (r.charges) " charges" }
                }
            }
            polyline points=(line.join(" ")) fill="none" stroke=(GREEN) stroke-width="2" {}
            @for (h, r) in by_hour.iter().filter(|(_, r)| settled(r) > 0) {
                circle class="point" data-hour=(r.group) data-charges=(r.charges) data-succeeded=(r.succeeded)
                    data-rate-bp=(r.success_rate_basis_points) cx=(format!("{:.1}", left + (*h as f64 + 0.5) * step))
                    cy=(format!("{:.1}", top + plot_h * (1.0 - f64::from(r.success_rate_basis_points) / 10_000.0))) r="4" fill=(GREEN) {
                    title { (r.group) ":00 — " (pct(r.success_rate_basis_points)) " of " (settled(r)) " settled" }
                }
            }
            @for h in (0..24).step_by(3) {
                text x=(format!("{:.1}", left + (h as f64 + 0.5) * step)) y=(top + plot_h + 18.0) text-anchor="middle" class="axis" { (format!("{h:02}")) }
            }
        }
    }
}

fn retention_chart(cohorts: &[apb::RetentionCohort]) -> Markup {
    if cohorts.is_empty() {
        return empty("contracts signed");
    }
    let (left, top, cell_w, cell_h) = (120.0, 24.0, 80.0, 28.0);
    let height = top + cell_h * cohorts.len() as f64 + 6.0;
    let width = left + cell_w * RETENTION_MONTHS.len() as f64 + 10.0;
    html! {
        svg class="chart" id="retention-chart" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" {
            title { "Share of each signing month's contracts still active after 1, 2, 3, 6 and 12 months" }
            @for (j, m) in RETENTION_MONTHS.iter().enumerate() {
                text x=(left + cell_w * (j as f64 + 0.5)) y="16" text-anchor="middle" class="axis" { (m) " mo" }
            }
            @for (i, c) in cohorts.iter().enumerate() {
                @let y = top + cell_h * i as f64;
                text x=(left - 8.0) y=(y + 19.0) text-anchor="end" { (c.month) " (" (c.signed) ")" }
                @for (j, p) in c.points.iter().enumerate() {
                    @let x = left + cell_w * j as f64;
                    @let bp = app::basis_points(p.retained as i64, p.eligible as i64);
                    @let fill = if p.eligible == 0 { "#edf2f7".to_string() } else { shade(bp) };
                    rect class="cell" data-cohort=(c.month) data-months=(p.months) data-eligible=(p.eligible) data-retained=(p.retained)
                        x=(x + 1.0) y=(y + 1.0) width=(cell_w - 2.0) height=(cell_h - 2.0) fill=(fill) {
                        title { (c.month) " after " (p.months) " months: " (p.retained) " of " (p.eligible) }
                    }
                    text x=(x + cell_w / 2.0) y=(y + 19.0) text-anchor="middle" class=(if bp > 6_000 { "on-dark" } else { "" }) {
                        @if p.eligible == 0 { "–" } @else { (bp / 100) "%" }
                    }
                }
            }
        }
    }
}

/// A blue from light (0%) to dark (100%).
fn shade(bp: u32) -> String {
    let t = f64::from(bp.min(10_000)) / 10_000.0;
    let mix = |light: f64, dark: f64| (light + (dark - light) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(235.0, 26.0), mix(244.0, 54.0), mix(255.0, 93.0))
}

fn channel_chart(rows: &[apb::NoticeChannelRow]) -> Markup {
    if rows.is_empty() {
        return empty("notices");
    }
    let measures = [("sent", BLUE), ("delivered", GREEN), ("opened", ORANGE), ("converted", PURPLE)];
    let (left, top, plot_h) = (44.0, 24.0, 160.0);
    let group_w = ((WIDTH - left - 10.0) / rows.len() as f64).min(160.0);
    let bar_w = (group_w - 16.0) / measures.len() as f64;
    let max = rows.iter().map(|r| r.sent.max(r.delivered)).max().unwrap_or(1).max(1) as f64;
    let height = top + plot_h + 30.0;
    html! {
        svg class="chart" id="channels-chart" width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)} role="img" {
            title { "Notices sent, delivered, opened and converted per channel" }
            @for (k, (name, color)) in measures.iter().enumerate() {
                rect x=(left + k as f64 * 110.0) y="4" width="10" height="10" fill=(color) {}
                text x=(left + k as f64 * 110.0 + 14.0) y="13" class="axis" { (name) }
            }
            @for (i, r) in rows.iter().enumerate() {
                @let x0 = left + group_w * i as f64 + 8.0;
                @for (k, (name, color)) in measures.iter().enumerate() {
                    @let v = match *name { "sent" => r.sent, "delivered" => r.delivered, "opened" => r.opened, _ => r.converted };
                    @let h = plot_h * v as f64 / max;
                    rect class="bar" data-channel=(r.channel) data-measure=(name) data-value=(v)
                        x=(format!("{:.1}", x0 + bar_w * k as f64)) y=(format!("{:.1}", top + plot_h - h)) width=(format!("{:.1}", bar_w - 2.0)) height=(format!("{h:.1}")) fill=(color) {
                        title { (r.channel) " " (name) ": " (v) }
                    }
                }
                text x=(format!("{:.1}", x0 + (group_w - 16.0) / 2.0)) y=(top + plot_h + 18.0) text-anchor="middle" {
                    (r.channel) " · opened " (pct(r.open_rate_basis_points)) " · converted " (pct(r.conversion_rate_basis_points))
                }
            }
        }
    }
}

fn revenue_chart(months: &[Month]) -> Markup {
    let currencies: Vec<&String> = {
        let mut c: Vec<&String> = months.iter().flat_map(|m| m.by_currency.keys()).collect();
        c.sort();
        c.dedup();
        c
    };
    if currencies.is_empty() {
        return empty("revenue");
    }
    let (left, top, plot_h) = (80.0, 24.0, 170.0);
    let step = (WIDTH - left - 10.0) / months.len() as f64;
    let height = top + plot_h + 30.0;
    html! {
        @for cur in currencies {
            @let value = |m: &Month| m.by_currency.get(cur).copied().unwrap_or_default();
            @let max = months.iter().map(|m| { let (g, _, r) = value(m); g.max(r) }).max().unwrap_or(1).max(1) as f64;
            @let y_of = |v: i64| top + plot_h * (1.0 - v.max(0) as f64 / max);
            @let mrr_line: Vec<String> = months.iter().enumerate().map(|(i, m)| format!("{:.1},{:.1}", left + (i as f64 + 0.5) * step, y_of(value(m).2))).collect();
            h3 { (cur) }
            svg class="chart revenue-chart" data-currency=(cur) width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)} role="img" {
                title { "Gross (bars), net (inner bars) and MRR at month end (line), " (cur) }
                rect x=(left) y="4" width="10" height="10" fill="#90cdf4" {}
                text x=(left + 14.0) y="13" class="axis" { "gross" }
                rect x=(left + 70.0) y="4" width="10" height="10" fill=(BLUE) {}
                text x=(left + 84.0) y="13" class="axis" { "net" }
                rect x=(left + 130.0) y="8" width="14" height="3" fill=(ORANGE) {}
                text x=(left + 148.0) y="13" class="axis" { "MRR" }
                text x=(left - 6.0) y=(top + 4.0) text-anchor="end" class="axis" { (money(max as i64, cur)) }
                line x1=(left) x2=(WIDTH - 10.0) y1=(top + plot_h) y2=(top + plot_h) stroke=(GREY) {}
                @for (i, m) in months.iter().enumerate() {
                    @let (gross, net, mrr) = value(m);
                    @let x = left + i as f64 * step;
                    rect class="gross" data-month=(m.label) data-from-ms=(m.from_ms) data-until-ms=(m.until_ms) data-gross=(gross) data-net=(net) data-mrr=(mrr)
                        x=(format!("{:.1}", x + 3.0)) y=(format!("{:.1}", y_of(gross))) width=(format!("{:.1}", step - 6.0)) height=(format!("{:.1}", top + plot_h - y_of(gross))) fill="#90cdf4" {
                        title { (m.label) ": gross " (money(gross, cur)) ", net " (money(net, cur)) ", MRR " (money(mrr, cur)) }
                    }
                    rect class="net" x=(format!("{:.1}", x + step * 0.3)) y=(format!("{:.1}", y_of(net))) width=(format!("{:.1}", step * 0.4)) height=(format!("{:.1}", top + plot_h - y_of(net))) fill=(BLUE) {}
                    @if i % 2 == 0 {
                        text x=(format!("{:.1}", x + step / 2.0)) y=(top + plot_h + 18.0) text-anchor="middle" class="axis" { (m.label) }
                    }
                }
                polyline points=(mrr_line.join(" ")) fill="none" stroke=(ORANGE) stroke-width="2" {}
            }
        }
    }
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1360px; padding: 16px; color: #1a202c; background: #f7fafc; }
header { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; justify-content: space-between; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 8px; }
h3 { font-size: 13px; margin: 4px 0; color: #4a5568; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(660px, 1fr)); gap: 16px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 12px; }
svg text { font-size: 12px; fill: #2d3748; }
svg text.axis { fill: #718096; font-size: 11px; }
svg text.on-dark { fill: #fff; }
.asof, .legend, .note, .empty { color: #4a5568; font-size: 13px; }
.error { color: #c53030; }
form.filters label { font-size: 13px; margin-right: 8px; }
#signin { display: flex; flex-direction: column; gap: 8px; max-width: 420px; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; autodebit_session=k.5.ab; b=2"));
        assert_eq!(cookie_of(&h), Some("k.5.ab"));
        let mut none = HeaderMap::new();
        none.append(header::COOKIE, HeaderValue::from_static("autodebit_sessionx=1"));
        assert_eq!(cookie_of(&none), None);
    }

    #[test]
    fn dates_and_parameters() {
        assert_eq!(day_start_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(day_start_ms("2026-13-01"), None);
        assert_eq!(day_start_ms("1969-12-31"), None, "before the epoch");
        assert_eq!(query_pairs("from=2026-01-01&merchant=m%201").unwrap()[1].1, "m 1");
        assert!(query_pairs("from=1&from=2").unwrap_err().contains("from"));
    }

    #[test]
    fn shades_run_from_light_to_dark() {
        assert_eq!(shade(0), "#ebf4ff");
        assert_eq!(shade(10_000), "#1a365d");
        assert_eq!(pct(1234), "12.34%");
    }
}
