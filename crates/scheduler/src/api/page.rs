//! The payer's step-up page for a held charge, on the scheduler's HTTP listener at
//! `/holds/<token>` (the link in the payer's notice): what is to be charged and why it was
//! held, in plain words; confirming with the credential releases it, declining rejects it.
//! Chinese by default, English with `?lang=en`. Parameters are checked before anything is
//! recorded; an unknown token is a plain 404.
use crate::holds::{HoldError, Holds, payer_code};
use crate::store::holds::{self, HoldRow};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{Currency, Money};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use std::collections::HashMap;

pub fn routes(holds: Holds) -> axum::Router {
    axum::Router::new()
        .route("/holds/{token}", get(view))
        .route("/holds/{token}/confirm", post(confirm))
        .route("/holds/{token}/decline", post(decline))
        .with_state(holds)
}

struct Text {
    title: &'static str,
    amount: &'static str,
    why: &'static str,
    until: &'static str,
    code: &'static str,
    simulator: &'static str,
    confirm: &'static str,
    decline: &'static str,
    released: &'static str,
    rejected: &'static str,
    wrong_code: &'static str,
}

const ZH: Text = Text {
    title: "确认本次扣款",
    amount: "扣款金额",
    why: "为保障您的资金安全，这笔扣款已暂停",
    until: "请在此时间前确认，逾期自动取消",
    code: "支付密码 / 验证码",
    simulator: "模拟环境验证码",
    confirm: "确认扣款",
    decline: "不是我，取消扣款",
    released: "您已确认，扣款将继续进行。",
    rejected: "这笔扣款已取消，不会扣款。",
    wrong_code: "验证码错误",
};

const EN: Text = Text {
    title: "Confirm this charge",
    amount: "Amount",
    why: "For your safety this charge has been paused",
    until: "Confirm before this time, or it is cancelled",
    code: "Payment password / code",
    simulator: "Simulator code",
    confirm: "Confirm the charge",
    decline: "This wasn't me: cancel it",
    released: "You confirmed it; the charge goes ahead.",
    rejected: "This charge was cancelled; nothing is taken.",
    wrong_code: "The code is wrong",
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}\
dt{color:#555;margin-top:.6rem}dd{margin:0;font-size:1.1rem}.notice{background:#fff6e0;padding:.6rem}\
.error{color:#b00}button{padding:.5rem 1rem;margin-top:.6rem}";

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html(html! { (DOCTYPE) title { "404" } p { "No such charge." } }.into_string()))
        .into_response()
}

fn bad_parameter(name: &str, problem: &str) -> Response {
    let page = html! { (DOCTYPE) title { "400" } p id="error" { (name) ": " (problem) } };
    (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response()
}

fn failure(e: HoldError) -> Response {
    let status = crate::api::risk::status_of(e);
    let code = autodebit_runtime::grpc::http_status(status.code());
    (code, Html(html! { (DOCTYPE) title { "error" } p id="error" { (status.message()) } }.into_string()))
        .into_response()
}

/// Only the parameters a route takes, each well formed.
fn check(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Response> {
    for (name, value) in params {
        if !allowed.contains(&name.as_str()) {
            return Err(bad_parameter(name, "is not a parameter of this page"));
        }
        let ok = match name.as_str() {
            "lang" => matches!(value.as_str(), "zh" | "zh-CN" | "en"),
            "code" => value.trim().len() <= 16,
            _ => true,
        };
        if !ok {
            return Err(bad_parameter(name, &format!("{value:?} is not allowed")));
        }
    }
    Ok(())
}

fn english(q: &HashMap<String, String>) -> bool {
    q.get("lang").is_some_and(|l| l == "en")
}

/// An amount of the hold's currency as the payer reads it.
fn money_text(r: &HoldRow, units: i64, chinese: bool) -> String {
    Currency::parse(&r.currency).map_or(units.to_string(), |c| Money::new(units, c).payer_text(chinese))
}

/// The hold's reason in the payer's words.
fn why(r: &HoldRow, en: bool) -> String {
    let money = |units: i64| money_text(r, units, !en);
    let basis = match (r.history_count, en) {
        (0, true) => "the amount your agreement sets".to_string(),
        (n, true) => format!("the average of your last {n} charges"),
        (0, false) => "协议约定的扣款金额".to_string(),
        (n, false) => format!("您此前 {n} 笔扣款的平均值"),
    };
    if en {
        format!("It is more than {}% of {basis} ({}).", r.threshold_percent, money(r.mean))
    } else {
        format!("金额超过{basis}（{}）的 {}%。", money(r.mean), r.threshold_percent)
    }
}

fn render(r: &HoldRow, en: bool, error: Option<&str>) -> Markup {
    let t = if en { &EN } else { &ZH };
    let lang = if en { "en" } else { "zh" };
    let amount = money_text(r, r.amount, !en);
    let until = from_millis(r.expires_at_ms).with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d %H:%M");
    let base = format!("/holds/{}", r.token);
    html! {
        (DOCTYPE)
        html lang=(if en { "en" } else { "zh-CN" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (t.title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                h1 { (t.title) }
                dl {
                    dt { (t.amount) } dd id="amount" { (amount) }
                }
                p id="why" class="notice" { (t.why) "：" (why(r, en)) }
                @if let Some(e) = error { p id="error" class="error" { (e) } }
                @match r.state.as_str() {
                    holds::HELD => {
                        p { (t.until) ": " b id="expires" { (until.to_string()) " (UTC+8)" } }
                        form method="post" action={ (base) "/confirm?lang=" (lang) } id="confirm-form" {
                            label { (t.code) " " input id="code" name="code" type="password" inputmode="numeric"; }
                            " "
                            small { (t.simulator) ": " b id="code-hint" { (payer_code(&r.token)) } }
                            p { button id="confirm" type="submit" { (t.confirm) } }
                        }
                        form method="post" action={ (base) "/decline?lang=" (lang) } {
                            button id="decline" type="submit" { (t.decline) }
                        }
                    }
                    holds::REJECTED => { h2 id="rejected" { (t.rejected) } }
                    _ => { h2 id="released" { (t.released) } }
                }
            }
        }
    }
}

async fn load(holds: &Holds, token: &str) -> Result<HoldRow, Response> {
    match holds.by_token(token).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found()),
        Err(e) => Err(failure(e)),
    }
}

async fn view(
    State(holds): State<Holds>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]) {
        return bad;
    }
    match load(&holds, &token).await {
        Ok(r) => Html(render(&r, english(&q), None).into_string()).into_response(),
        Err(e) => e,
    }
}

fn back(token: &str, q: &HashMap<String, String>) -> Response {
    let lang = if english(q) { "en" } else { "zh" };
    Redirect::to(&format!("/holds/{token}?lang={lang}")).into_response()
}

async fn confirm(
    State(holds): State<Holds>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]).and_then(|()| check(&f, &["code"])) {
        return bad;
    }
    let row = match load(&holds, &token).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let code = f.get("code").map(String::as_str).unwrap_or_default();
    match holds.confirm_by_payer(&row, code).await {
        Ok(()) => back(&token, &q),
        Err(HoldError::Invalid { .. }) => {
            let en = english(&q);
            let t = if en { &EN } else { &ZH };
            (StatusCode::BAD_REQUEST, Html(render(&row, en, Some(t.wrong_code)).into_string())).into_response()
        }
        Err(e) => failure(e),
    }
}

async fn decline(
    State(holds): State<Holds>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]) {
        return bad;
    }
    let row = match load(&holds, &token).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    match holds.decline_by_payer(&row).await {
        Ok(()) => back(&token, &q),
        Err(e) => failure(e),
    }
}
