//! The dashboard in headless Chromium: a merchant signs in with its key and an operator with
//! the operator key; every chart draws, and every number a chart carries is the number the
//! gRPC API answers for the same question. Signing in with a bad key, a forged or revoked
//! session, and a merchant asking for another merchant's figures are refused.
//! Set `AUTODEBIT_SCREENSHOTS=DIR` to keep the pages as `DIR/dashboard-*.png`.
use crate::analytics::session;
use crate::scenario::onboard;
use crate::support::{self, TestApp, eventually};
use autodebit_proto::analytics::v1::{
    ChargeGrouping, GetChargeStatsRequest, GetNoticeChannelsRequest, GetRetentionRequest, GetRevenueRequest,
    GetSigningFunnelRequest, TimeRange,
};
use autodebit_proto::charger::v1::{ChargeState, GetChargeRequest, RefundChargeRequest};
use autodebit_proto::contracts::v1::{RevokeApiKeyRequest, TerminateContractRequest};
use autodebit_proto::events::v1::{Money, SigningChannel, TerminationMode};
use fantoccini::{Client, Locator};
use futures::FutureExt;
use serde_json::Value;
use std::time::Duration;

/// What the page's charts carry, read in the browser.
const READ_CHARTS: &str = r#"
const q = s => [...document.querySelectorAll(s)];
const n = v => Number(v);
return {
  who: document.querySelector('#who') && document.querySelector('#who').textContent,
  cookie: document.cookie,
  drawn: q('svg.chart').map(s => { const b = s.getBoundingClientRect(); return b.width > 0 && b.height > 0; }),
  funnel: q('#funnel-chart rect.bar').map(r => [r.dataset.step, n(r.dataset.value), r.getBBox().width]),
  hours: q('#hourly-chart circle.point').map(c => [c.dataset.hour, n(c.dataset.charges), n(c.dataset.succeeded), n(c.dataset.rateBp)]),
  cells: q('#retention-chart rect.cell').map(c => [c.dataset.cohort, n(c.dataset.months), n(c.dataset.eligible), n(c.dataset.retained)]),
  channels: q('#channels-chart rect.bar').map(r => [r.dataset.channel, r.dataset.measure, n(r.dataset.value)]),
  revenue: q('svg.revenue-chart rect.gross').map(r => [r.closest('svg').dataset.currency, r.dataset.month,
    n(r.dataset.fromMs), n(r.dataset.untilMs), n(r.dataset.gross), n(r.dataset.net), n(r.dataset.mrr)]),
  empty: q('p.empty').length,
};
"#;

async fn charts(b: &Client) -> Value {
    b.execute(READ_CHARTS, vec![]).await.expect("the charts read in the browser")
}

async fn sign_in(b: &Client, base: &str, key: &str) {
    b.goto(&format!("{base}/dashboard")).await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#key")).await.expect("the sign-in form");
    b.find(Locator::Css("#key")).await.unwrap().send_keys(key).await.unwrap();
    b.find(Locator::Css("#signin-submit")).await.unwrap().click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#who, #error")).await.unwrap();
}

fn screenshot(png: &[u8], name: &str) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(dir) = std::env::var("AUTODEBIT_SCREENSHOTS") {
        std::fs::write(std::path::Path::new(&dir).join(format!("dashboard-{name}.png")), png).unwrap();
    }
}

/// What the API answers `key`'s holder for the questions the page shows, as the page's
/// numbers read: (funnel, hours, cells, channels, revenue) for `merchant_id` ("": all).
async fn api_figures(app: &TestApp, key: &str, revenue_months: &[Value]) -> Value {
    let mut a = app.analytics_as(key);
    let funnel = a.get_signing_funnel(GetSigningFunnelRequest::default()).await.unwrap().into_inner().rows;
    let f = funnel.first().cloned().unwrap_or_default();
    let steps = [
        ("opened", f.opened),
        ("page_viewed", f.page_viewed),
        ("agreement_ticked", f.agreement_ticked),
        ("signed", f.signed),
    ];
    let hours = a
        .get_charge_stats(GetChargeStatsRequest { group_by: ChargeGrouping::HourOfDay as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let cohorts = a.get_retention(GetRetentionRequest::default()).await.unwrap().into_inner().cohorts;
    let channels = a.get_notice_channels(GetNoticeChannelsRequest::default()).await.unwrap().into_inner().rows;
    let mut revenue = Vec::new();
    for m in revenue_months {
        let (from_ms, until_ms) = (m[2].as_i64().unwrap(), m[3].as_i64().unwrap());
        let rows = a
            .get_revenue(GetRevenueRequest { range: Some(TimeRange { from_ms, until_ms }), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .rows;
        let currency = m[0].as_str().unwrap();
        let sum = |f: fn(&autodebit_proto::analytics::v1::RevenueRow) -> i64| {
            rows.iter().filter(|r| r.currency == currency).map(f).sum::<i64>()
        };
        revenue.push(serde_json::json!([
            currency,
            m[1],
            from_ms,
            until_ms,
            sum(|r| r.gross),
            sum(|r| r.net),
            sum(|r| r.mrr)
        ]));
    }
    serde_json::json!({
        "funnel": steps.iter().filter(|_| f.opened > 0).map(|(s, v)| serde_json::json!([s, v])).collect::<Vec<_>>(),
        "hours": hours
            .iter()
            .filter(|r| r.group.parse::<u32>().is_ok() && r.succeeded + r.failed + r.rejected > 0)
            .map(|r| serde_json::json!([r.group, r.charges, r.succeeded, r.success_rate_basis_points]))
            .collect::<Vec<_>>(),
        "cells": cohorts
            .iter()
            .flat_map(|c| c.points.iter().map(move |p| serde_json::json!([c.month, p.months, p.eligible, p.retained])))
            .collect::<Vec<_>>(),
        "channels": channels
            .iter()
            .flat_map(|r| {
                [("sent", r.sent), ("delivered", r.delivered), ("opened", r.opened), ("converted", r.converted)]
                    .map(|(m, v)| serde_json::json!([r.channel, m, v]))
            })
            .collect::<Vec<_>>(),
        "revenue": revenue,
    })
}

/// The page's numbers, in the shape of [`api_figures`] (the funnel without its bar widths).
fn page_figures(page: &Value) -> Value {
    let funnel: Vec<Value> =
        page["funnel"].as_array().unwrap().iter().map(|r| serde_json::json!([r[0], r[1]])).collect();
    serde_json::json!({
        "funnel": funnel,
        "hours": page["hours"],
        "cells": page["cells"],
        "channels": page["channels"],
        "revenue": page["revenue"],
    })
}

#[tokio::test]
async fn the_dashboard_draws_what_the_api_answers() {
    let app = support::run_on(support::Backend::Sqlite, 1_500, &["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2DSH0001").await;
    let other = onboard(&ch, "91330100MA2DSH0002").await;

    // Sessions on three channels, taken to different steps.
    let full = ["view", "tick", "confirm"];
    let mut signed = Vec::new();
    for (i, (channel, steps)) in [
        (SigningChannel::H5, &full[..]),
        (SigningChannel::H5, &full[..]),
        (SigningChannel::H5, &["view", "abandon"][..]),
        (SigningChannel::H5, &[][..]),
        (SigningChannel::MiniProgram, &full[..]),
        (SigningChannel::MiniProgram, &full[..]),
        (SigningChannel::MiniProgram, &["view"][..]),
        (SigningChannel::App, &full[..]),
        (SigningChannel::App, &["view", "tick"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let contract = session(&app, &m, &format!("payer-{i}"), channel, steps).await;
        if !contract.is_empty() {
            signed.push(contract);
        }
    }
    assert_eq!(signed.len(), 5);
    // Two months of billing, one contract ended after the first, a second cohort, a refund.
    app.advance(31).await;
    app.settled().await;
    app.contracts_as(&m.api_key)
        .terminate_contract(TerminateContractRequest {
            contract_id: signed[0].clone(),
            mode: TerminationMode::Merchant as i32,
            remark: "moved away".into(),
            expected_version: None,
        })
        .await
        .expect("TerminateContract");
    for i in 0..2 {
        session(&app, &m, &format!("payer-late-{i}"), SigningChannel::H5, &full).await;
    }
    app.advance(31).await;
    app.settled().await;
    app.advance(31).await;
    app.settled().await;
    // A refund of the first charge that succeeded.
    let mut succeeded = None;
    for contract in &signed[1..] {
        let id = crate::scenario::charge_id(contract, 1);
        let got = app.charger().get_charge(GetChargeRequest { charge_id: id.clone() }).await.unwrap().into_inner();
        if got.charge.is_some_and(|c| c.state == ChargeState::Succeeded as i32) {
            succeeded = Some(id);
            break;
        }
    }
    app.charger_as(&m.api_key)
        .refund_charge(RefundChargeRequest {
            charge_id: succeeded.expect("a charge that succeeded"),
            amount: Some(Money { minor_units: 500, currency: "CNY".into() }),
            reason: "asked".into(),
            idempotency_key: "dashboard-1".into(),
        })
        .await
        .expect("RefundCharge");
    app.advance_seconds(60).await;
    app.settled().await;

    let base = format!("http://{}", app.http);
    let profile = tempfile::tempdir().unwrap();
    let (driver, browser) = support::browser(profile.path(), (1400, 1150)).await;
    let run = std::panic::AssertUnwindSafe(in_the_browser(&app, &browser, &base, &m, &other)).catch_unwind().await;
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }

    // Sessions are refused once made up or once their key is revoked.
    let (status, _, cookie) = post_key(&base, &other.api_key).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let value = cookie.split(';').next().unwrap().to_string();
    assert_eq!(get_with(&base, &value).await.0, 200);
    // Its last character changed (to another one: a value ending in 0 becomes one ending in 1).
    let flipped = if value.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}", &value[..value.len() - 1]);
    let (status, body) = get_with(&base, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("session"), "{body}");
    let key_id = other.api_key.strip_prefix("adk_").and_then(|r| r.rsplit_once('_')).unwrap().0.to_string();
    app.merchants_as(&other.api_key).revoke_api_key(RevokeApiKeyRequest { key_id }).await.expect("RevokeApiKey");
    eventually("the revoked key's session refused", 30, || {
        let (base, value) = (base.clone(), value.clone());
        async move { (get_with(&base, &value).await.0 == 401).then_some(()) }
    })
    .await;
}

/// POSTs a key to the sign-in form: (status, body, Set-Cookie).
async fn post_key(base: &str, key: &str) -> (u16, String, Option<String>) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = client.post(format!("{base}/dashboard/session")).form(&[("key", key)]).send().await.unwrap();
    let cookie = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), r.text().await.unwrap(), cookie)
}

async fn get_with(base: &str, cookie: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(format!("{base}/dashboard")).header("cookie", cookie).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn in_the_browser(
    app: &TestApp,
    b: &Client,
    base: &str,
    m: &crate::scenario::Merchant,
    other: &crate::scenario::Merchant,
) {
    // Without a session there is only the sign-in form; a bad key is named as the problem.
    sign_in(b, base, "adk_key_0000000000000000_nothing").await;
    let error = b.find(Locator::Css("#error")).await.unwrap().text().await.unwrap();
    assert!(error.starts_with("key:"), "{error}");
    assert!(b.find(Locator::Css("#who")).await.is_err(), "no figures without a session");

    // The merchant: every chart drawn, every number the API's.
    sign_in(b, base, &m.api_key).await;
    let page = charts(b).await;
    assert_eq!(page["who"], format!("Merchant {}", m.merchant_id));
    assert_eq!(page["cookie"], "", "the session cookie is out of the page's reach");
    let drawn = page["drawn"].as_array().unwrap();
    assert!(drawn.len() >= 5 && drawn.iter().all(|d| d == true), "{page}");
    assert_eq!(page["empty"], 0, "every chart has figures: {page}");
    let bars = page["funnel"].as_array().unwrap();
    assert_eq!(bars.len(), 4);
    assert_eq!(bars[0][1], 11, "eleven sessions opened");
    assert!(bars.iter().all(|b| b[2].as_f64().unwrap() > 0.0), "every step drawn: {bars:?}");
    assert!(bars.windows(2).all(|w| w[0][2].as_f64() >= w[1][2].as_f64()), "narrowing: {bars:?}");
    let api = api_figures(app, &m.api_key, page["revenue"].as_array().unwrap()).await;
    assert_eq!(page_figures(&page), api);
    assert!(page["revenue"].as_array().unwrap().iter().any(|r| r[4].as_i64().unwrap() > 0), "revenue drawn");
    assert!(
        page["cells"].as_array().unwrap().iter().any(|c| c[2].as_u64().unwrap() > 0 && c[3] != c[2]),
        "the ended contract shows"
    );
    screenshot(&b.screenshot().await.unwrap(), "merchant");

    // It cannot look at another merchant's figures.
    b.goto(&format!("{base}/dashboard?merchant={}", other.merchant_id)).await.unwrap();
    let error = b.find(Locator::Css("#error")).await.unwrap().text().await.unwrap();
    assert!(error.starts_with("merchant:"), "{error}");
    b.goto(&format!("{base}/dashboard?from=yesterday")).await.unwrap();
    let error = b.find(Locator::Css("#error")).await.unwrap().text().await.unwrap();
    assert!(error.starts_with("from:"), "{error}");

    // Signed out, the form again.
    b.goto(&format!("{base}/dashboard")).await.unwrap();
    b.find(Locator::Css("#signout")).await.unwrap().click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#key")).await.expect("signed out");

    // The other merchant sees none of it.
    sign_in(b, base, &other.api_key).await;
    let page = charts(b).await;
    assert_eq!(page["who"], format!("Merchant {}", other.merchant_id));
    assert_eq!(page["empty"], 5, "{page}");
    b.find(Locator::Css("#signout")).await.unwrap().click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#key")).await.unwrap();

    // The operator: the platform's figures, and a merchant's when it names one.
    sign_in(b, base, app.operator_key()).await;
    let page = charts(b).await;
    assert_eq!(page["who"], "All merchants");
    let api = api_figures(app, app.operator_key(), page["revenue"].as_array().unwrap()).await;
    assert_eq!(page_figures(&page), api);
    screenshot(&b.screenshot().await.unwrap(), "operator");
    b.goto(&format!("{base}/dashboard?merchant={}", other.merchant_id)).await.unwrap();
    let page = charts(b).await;
    assert_eq!(page["who"], format!("Merchant {} (operator)", other.merchant_id));
    assert_eq!(page["empty"], 5);
}
