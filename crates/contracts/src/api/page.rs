//! The hosted authorization page, served on the contracts service's HTTP listener: the payer
//! sees what they agree to (service, cycle, cap, the plan's terms, risk notice, an example
//! charge, customer service), ticks the agreement and confirms with a credential. Chinese by
//! default, English with `?lang=en` or the session's language. Every parameter is checked
//! before anything is recorded.
use crate::app::signing::{Loaded, Signing, StepError, simulator_code};
use autodebit_domain::signing::{SessionStatus, SigningCommand, Step};
use autodebit_domain::terms::Terms;
use autodebit_runtime::codec::Cause;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, PreEscaped, display, html};
use std::collections::HashMap;

#[derive(Clone)]
pub struct PageState {
    pub signing: Signing,
    pub merchants: crate::app::merchants::Merchants,
}

pub fn routes(state: PageState) -> axum::Router {
    axum::Router::new()
        .route("/sign/{id}", get(view))
        .route("/sign/{id}/tick", post(tick))
        .route("/sign/{id}/sms", post(sms))
        .route("/sign/{id}/confirm", post(confirm))
        .route("/sign/{id}/abandon", post(abandon))
        .with_state(state)
}

struct Text {
    title: &'static str,
    service: &'static str,
    cycle: &'static str,
    cap: &'static str,
    terms: &'static str,
    risk: &'static str,
    example: &'static str,
    support: &'static str,
    agree: &'static str,
    code: &'static str,
    confirm: &'static str,
    abandon: &'static str,
    sms: &'static str,
    verify: &'static str,
    simulator: &'static str,
    held: &'static str,
    done: &'static str,
    ended: &'static str,
    back: &'static str,
}

const ZH: Text = Text {
    title: "开通自动扣费",
    service: "服务名称",
    cycle: "扣费周期",
    cap: "单笔扣费上限",
    terms: "扣费规则",
    risk: "开通后，商户将按以下规则从您的账户自动扣款，扣款前会提前通知您。您可随时在服务中或支付平台内解约，解约后不再扣款。",
    example: "扣费示例",
    support: "联系客服",
    agree: "我已阅读并同意《自动扣费服务协议》",
    code: "支付密码 / 验证码",
    confirm: "确认开通",
    abandon: "暂不开通",
    sms: "为保障账户安全，请输入短信验证码",
    verify: "验证",
    simulator: "模拟环境验证码",
    held: "您的签约申请正在人工审核中，请稍后再试。",
    done: "自动扣费已开通",
    ended: "本次签约已结束",
    back: "返回商户",
};

const EN: Text = Text {
    title: "Set up automatic payments",
    service: "Service",
    cycle: "Charged",
    cap: "Most per charge",
    terms: "How you are charged",
    risk: "Once set up, the merchant charges your account automatically under these terms, and tells you before each charge. You can cancel at any time in the service or your payment app; after that nothing more is charged.",
    example: "Example charge",
    support: "Customer service",
    agree: "I have read and agree to the automatic payment agreement",
    code: "Payment password / code",
    confirm: "Confirm",
    abandon: "Not now",
    sms: "For your security, enter the code we sent by SMS",
    verify: "Verify",
    simulator: "Simulator code",
    held: "Your request is being reviewed by our staff; please try again later.",
    done: "Automatic payments are set up",
    ended: "This signing session has ended",
    back: "Back to the merchant",
};

fn not_found() -> Response {
    let page = html! { (DOCTYPE) title { "404" } p { "No such signing session." } };
    (StatusCode::NOT_FOUND, Html(page.into_string())).into_response()
}

fn failure(e: tonic::Status) -> Response {
    let code = autodebit_runtime::grpc::http_status(e.code());
    let page = html! { (DOCTYPE) title { "error" } p { (e.message()) } };
    (code, Html(page.into_string())).into_response()
}

/// A page answering 400 for a malformed parameter, naming it; nothing was recorded.
fn bad_parameter(name: &str, problem: &str) -> Response {
    let page = html! { (DOCTYPE) title { "400" } p id="error" { (name) ": " (problem) } };
    (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response()
}

/// Checks a route's query or form parameters before anything is recorded: only those the
/// route takes (`allowed`), each well formed.
fn check(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Response> {
    for (name, value) in params {
        let problem = match name.as_str() {
            n if !allowed.contains(&n) => "is not a parameter of this page",
            "lang" if value != "zh" && value != "en" => "must be zh or en",
            "error" if value.chars().count() > 200 || value.chars().any(char::is_control) => {
                "must be at most 200 characters, none of them control characters"
            }
            "code" if value.chars().count() > 32 || value.chars().any(char::is_control) => {
                "must be at most 32 characters, none of them control characters"
            }
            "agree" if value != "yes" => "must be yes",
            _ => continue,
        };
        return Err(bad_parameter(name, problem));
    }
    Ok(())
}

async fn view(
    State(st): State<PageState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(bad) = check(&q, &["lang", "error"]) {
        return bad;
    }
    let cause = Cause::request(format!("page/{id}"));
    let loaded = match st.signing.load(&id).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => return failure(e),
    };
    // Record the first view (or, past its time, the expiry) as a funnel step: a reload is not
    // another view.
    let command = if loaded.session.expires_at <= st.signing.contracts.platform.clock.now() {
        Some(SigningCommand::Expire)
    } else if loaded.session.steps.iter().any(|(s, _, _)| *s == Step::PageViewed) {
        None
    } else {
        let agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        Some(SigningCommand::View { device: autodebit_domain::signing::device_kind(agent) })
    };
    let loaded = match command {
        Some(command) if !loaded.session.status.is_final() => match st.signing.step(&id, command, &cause).await {
            Ok(l) => l,
            Err(StepError::Rule(_)) => loaded,
            // Another load of the page recorded the view (or a step) first.
            Err(StepError::Status(s)) if s.code() == tonic::Code::Aborted => loaded,
            Err(e) => return failure(e.into()),
        },
        _ => loaded,
    };
    let en = q.get("lang").map(|l| l == "en").unwrap_or(loaded.opened.language == "en");
    match render(&st, &loaded, en, q.get("error").map(String::as_str)).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => failure(e),
    }
}

async fn render(st: &PageState, l: &Loaded, en: bool, error: Option<&str>) -> Result<String, tonic::Status> {
    let t = if en { &EN } else { &ZH };
    let lang = if en { "en" } else { "zh" };
    let o = &l.opened;
    let (_, plan) = crate::app::plans::load(&st.signing.contracts.platform, &o.plan_id)
        .await?
        .ok_or_else(|| tonic::Status::not_found("the session's plan is gone"))?;
    let terms = Terms::from(&plan);
    let support = match autodebit_domain::MerchantId::parse(&o.merchant_id) {
        Ok(mid) => st.merchants.load(&mid).await?.0.map(|m| m.application.contact_email).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let status = l.session.status;
    let open = !matches!(status, SessionStatus::Confirmed | SessionStatus::Held) && !status.is_final();
    // The SMS step's form. The code itself goes to the payer through the log
    // (`VerificationCodeIssued`, sent by the notifier); with the simulator provider the page
    // shows it too, a convenience for local runs where no SMS channel is configured.
    let sms_hint = if open && l.session.sms_required && !l.session.sms_verified {
        Some(st.signing.sms_hint(&o.session_id).await?)
    } else {
        None
    };
    let base = format!("/sign/{}", o.session_id);
    let ticked = l.session.ticked;
    let back = html! { p { a id="return" href=(o.return_url) { (t.back) } } };
    let page = html! {
        (DOCTYPE)
        html lang=(if en { "en" } else { "zh-CN" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (t.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (t.title) }
                dl {
                    dt { (t.service) } dd id="service-name" { (terms.service_name) }
                    dt { (t.cycle) } dd id="charge-cycle" { (terms.cycle_label(en)) }
                    dt { (t.cap) } dd id="amount-cap" { (display(terms.per_charge_cap)) }
                    dt { (t.terms) } dd { ul id="terms" { @for line in terms.lines(en) { li { (line) } } } }
                    dt { (t.example) } dd id="example-charge" { (terms.example(en)) }
                }
                p id="risk-notice" class="notice" { (t.risk) }
                p { a id="customer-service" href={ "mailto:" (support) } { (t.support) } }
                @if let Some(e) = error {
                    p id="error" class="error" { (e) }
                }
                @match status {
                    SessionStatus::Confirmed => { h2 id="done" { (t.done) } (back) }
                    SessionStatus::Held => { p id="held" { (t.held) } }
                    s if s.is_final() => { h2 id="ended" { (t.ended) } (back) }
                    _ => {
                        @if let Some(hint) = &sms_hint {
                            form method="post" action={ (base) "/sms?lang=" (lang) } id="sms-form" {
                                p { (t.sms) }
                                input id="sms-code" name="code" inputmode="numeric" autocomplete="one-time-code";
                                " "
                                button id="sms-verify" type="submit" { (t.verify) }
                                " "
                                @if !hint.is_empty() {
                                    small { (t.simulator) ": " b id="sms-hint" { (hint) } }
                                }
                            }
                        }
                        form method="post" action={ (base) "/tick?lang=" (lang) } id="tick-form" {
                            label {
                                input type="checkbox" id="agree" name="agree" value="yes" checked[ticked]
                                    disabled[ticked] onchange="if(this.checked)this.form.submit()";
                                " " (t.agree)
                            }
                        }
                        form method="post" action={ (base) "/confirm?lang=" (lang) } id="confirm-form" {
                            label { (t.code) " " input id="code" name="code" type="password" inputmode="numeric"; }
                            " "
                            small { (t.simulator) ": " b id="code-hint" { (simulator_code(&o.session_id)) } }
                            p { button id="confirm" type="submit" disabled[!ticked] { (t.confirm) } }
                        }
                        form method="post" action={ (base) "/abandon?lang=" (lang) } {
                            button id="abandon" type="submit" { (t.abandon) }
                        }
                    }
                }
            }
        }
    };
    Ok(page.into_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}\
    dt{color:#666;font-size:.9rem}dd{margin:0 0 .6rem;font-size:1.1rem}\
    .notice{background:#fff7e0;border-left:4px solid #f0b400;padding:.6rem}.error{color:#b00020}\
    button{font-size:1rem;padding:.5rem 1.2rem}#confirm{background:#07c160;color:#fff;border:0}\
    #confirm[disabled]{background:#9ddfb9}";

fn back_to(id: &str, q: &HashMap<String, String>, error: Option<String>) -> Redirect {
    let lang = q.get("lang").map(String::as_str).unwrap_or("zh");
    match error {
        None => Redirect::to(&format!("/sign/{id}?lang={lang}")),
        Some(e) => Redirect::to(&format!("/sign/{id}?lang={lang}&error={}", urlencode(&e))),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn act(st: &PageState, id: &str, q: &HashMap<String, String>, command: SigningCommand) -> Response {
    let cause = Cause::request(format!("page/{id}"));
    match st.signing.step(id, command, &cause).await {
        Ok(_) => back_to(id, q, None).into_response(),
        Err(StepError::NotFound) => not_found(),
        Err(StepError::Rule(r)) => back_to(id, q, Some(r.to_string())).into_response(),
        Err(e) => failure(e.into()),
    }
}

async fn tick(
    State(st): State<PageState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]).and_then(|()| check(&f, &["agree"])) {
        return bad;
    }
    act(&st, &id, &q, SigningCommand::Tick).await
}

async fn abandon(
    State(st): State<PageState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]).and_then(|()| check(&f, &[])) {
        return bad;
    }
    act(&st, &id, &q, SigningCommand::Abandon).await
}

async fn sms(
    State(st): State<PageState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]).and_then(|()| check(&f, &["code"])) {
        return bad;
    }
    match st.signing.sms_code_matches(&id, f.get("code").map(String::as_str).unwrap_or_default()).await {
        Ok(true) => act(&st, &id, &q, SigningCommand::VerifySms).await,
        Ok(false) => back_to(&id, &q, Some("the SMS code is wrong / 短信验证码错误".into())).into_response(),
        Err(e) => failure(e),
    }
}

async fn confirm(
    State(st): State<PageState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(bad) = check(&q, &["lang"]).and_then(|()| check(&f, &["code"])) {
        return bad;
    }
    // The credential step: with the simulator provider, the session's simulated code.
    let code = f.get("code").map(|c| c.trim()).unwrap_or_default();
    if code != simulator_code(&id) {
        return back_to(&id, &q, Some("the code is wrong / 验证码错误".into())).into_response();
    }
    act(&st, &id, &q, SigningCommand::Confirm { contract_id: String::new() }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_a_caller_sent_is_escaped() {
        let res = failure(tonic::Status::not_found("<script>alert(\"x\")</script> & more"));
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.ends_with("<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more</p>"), "{body}");
    }
}
