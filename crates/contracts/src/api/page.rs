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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html("<!doctype html><title>404</title><p>No such signing session.</p>")).into_response()
}

fn failure(e: tonic::Status) -> Response {
    let code = autodebit_runtime::grpc::http_status(e.code());
    (code, Html(format!("<!doctype html><title>error</title><p>{}</p>", escape(e.message())))).into_response()
}

/// A page answering 400 for a malformed parameter, naming it; nothing was recorded.
fn bad_parameter(name: &str, problem: &str) -> Response {
    let message = format!("{name}: {problem}");
    (
        StatusCode::BAD_REQUEST,
        Html(format!("<!doctype html><title>400</title><p id=\"error\">{}</p>", escape(&message))),
    )
        .into_response()
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
        Some(SigningCommand::View)
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
    let rules: String = terms.lines(en).iter().map(|l| format!("<li>{}</li>", escape(l))).collect();
    let support = match autodebit_domain::MerchantId::parse(&o.merchant_id) {
        Ok(mid) => st.merchants.load(&mid).await?.0.map(|m| m.application.contact_email).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let base = format!("/sign/{}", escape(&o.session_id));
    let mut body = String::new();
    body.push_str(&format!(
        "<dl>\
         <dt>{}</dt><dd id=\"service-name\">{}</dd>\
         <dt>{}</dt><dd id=\"charge-cycle\">{}</dd>\
         <dt>{}</dt><dd id=\"amount-cap\">{}</dd>\
         <dt>{}</dt><dd><ul id=\"terms\">{rules}</ul></dd>\
         <dt>{}</dt><dd id=\"example-charge\">{}</dd>\
         </dl>\
         <p id=\"risk-notice\" class=\"notice\">{}</p>\
         <p><a id=\"customer-service\" href=\"mailto:{}\">{}</a></p>",
        t.service,
        escape(&terms.service_name),
        t.cycle,
        terms.cycle_label(en),
        t.cap,
        terms.per_charge_cap,
        t.terms,
        t.example,
        escape(&terms.example(en)),
        t.risk,
        escape(&support),
        t.support,
    ));
    if let Some(e) = error {
        body.push_str(&format!("<p id=\"error\" class=\"error\">{}</p>", escape(e)));
    }
    let back = format!("<p><a id=\"return\" href=\"{}\">{}</a></p>", escape(&o.return_url), t.back);
    match l.session.status {
        SessionStatus::Confirmed => body.push_str(&format!("<h2 id=\"done\">{}</h2>{back}", t.done)),
        SessionStatus::Held => body.push_str(&format!("<p id=\"held\">{}</p>", t.held)),
        s if s.is_final() => body.push_str(&format!("<h2 id=\"ended\">{}</h2>{back}", t.ended)),
        _ => {
            if l.session.sms_required && !l.session.sms_verified {
                let hint = st.signing.sms_hint(&o.session_id).await?;
                let hint = if hint.is_empty() {
                    String::new()
                } else {
                    format!("<small>{}: <b id=\"sms-hint\">{hint}</b></small>", t.simulator)
                };
                body.push_str(&format!(
                    "<form method=\"post\" action=\"{base}/sms?lang={lang}\" id=\"sms-form\"><p>{}</p>\
                     <input id=\"sms-code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\"> \
                     <button id=\"sms-verify\" type=\"submit\">{}</button> {hint}</form>",
                    t.sms, t.verify
                ));
            }
            let checked = if l.session.ticked { " checked disabled" } else { "" };
            body.push_str(&format!(
                "<form method=\"post\" action=\"{base}/tick?lang={lang}\" id=\"tick-form\">\
                 <label><input type=\"checkbox\" id=\"agree\" name=\"agree\" value=\"yes\"{checked} \
                 onchange=\"if(this.checked)this.form.submit()\"> {}</label></form>",
                t.agree
            ));
            let hint =
                format!("<small>{}: <b id=\"code-hint\">{}</b></small>", t.simulator, simulator_code(&o.session_id));
            let disabled = if l.session.ticked { "" } else { " disabled" };
            body.push_str(&format!(
                "<form method=\"post\" action=\"{base}/confirm?lang={lang}\" id=\"confirm-form\">\
                 <label>{} <input id=\"code\" name=\"code\" type=\"password\" inputmode=\"numeric\"></label> {hint}\
                 <p><button id=\"confirm\" type=\"submit\"{disabled}>{}</button></p></form>\
                 <form method=\"post\" action=\"{base}/abandon?lang={lang}\"><button id=\"abandon\" type=\"submit\">{}</button></form>",
                t.code, t.confirm, t.abandon
            ));
        }
    }
    Ok(format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         dt{{color:#666;font-size:.9rem}}dd{{margin:0 0 .6rem;font-size:1.1rem}}\
         .notice{{background:#fff7e0;border-left:4px solid #f0b400;padding:.6rem}}.error{{color:#b00020}}\
         button{{font-size:1rem;padding:.5rem 1.2rem}}#confirm{{background:#07c160;color:#fff;border:0}}\
         #confirm[disabled]{{background:#9ddfb9}}</style></head><body><h1>{}</h1>{}</body></html>",
        if en { "en" } else { "zh-CN" },
        t.title,
        t.title,
        body
    ))
}

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
