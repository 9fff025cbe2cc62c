//! The payer's own page, `GET /me/<merchant>/<payer>?sig=…` on the HTTP listener (linked from
//! every notice's landing page): the payer's contracts with the merchant, each one's rules in
//! plain words (amount, cycle, cap, daily limits, the next charge and its date), their charges
//! and refunds with receipts, a termination with a confirmation step, and a complaint form on
//! each charge that took money. Chinese by default, English with `?lang=en`.
//!
//! The page is the scheduler's because the scheduler knows when each contract is charged
//! next; the forms post to the services that own what they change — termination to the
//! contracts service (`/me/…/contracts/<id>/terminate`), complaints and receipts to the
//! charger (`/me/…/charges/<id>/complaint`, `/me/…/receipts/<id>`) — each checking the same
//! signature (`autodebit_runtime::links`). A link whose signature does not match answers 404,
//! as a page that does not exist.
use crate::store::payers::{self, ContractView, Item};
use crate::store::{Db, schedules::cycle_from_str};
use autodebit_domain::clock::from_millis;
use autodebit_domain::terms::Terms;
use autodebit_domain::{Currency, Money};
use autodebit_eventstore::EventStore;
use autodebit_runtime::links::{PayerLinks, encode};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;

#[derive(Clone)]
pub struct MePage {
    pub store: EventStore,
    pub links: PayerLinks,
}

pub fn routes(page: MePage) -> axum::Router {
    axum::Router::new().route("/me/{merchant}/{payer}", get(view)).with_state(page)
}

/// How many charges and refunds the page lists, newest first.
const ITEMS: i64 = 200;

struct Text {
    title: &'static str,
    intro: &'static str,
    none: &'static str,
    state: &'static str,
    rules: &'static str,
    cap: &'static str,
    daily: &'static str,
    next: &'static str,
    no_next: &'static str,
    by_use: &'static str,
    usage_due: &'static str,
    signed: &'static str,
    valid_until: &'static str,
    terminate: &'static str,
    confirm_title: &'static str,
    confirm_body: &'static str,
    confirm: &'static str,
    cancel: &'static str,
    history: &'static str,
    no_history: &'static str,
    when: &'static str,
    what: &'static str,
    amount: &'static str,
    status: &'static str,
    receipt: &'static str,
    complain: &'static str,
    kind: &'static str,
    description: &'static str,
    send: &'static str,
    complained: &'static str,
    refunded: &'static str,
    retry_at: &'static str,
    confirm_hold: &'static str,
    refund: &'static str,
    done_terminated: &'static str,
    done_complained: &'static str,
}

const ZH: Text = Text {
    title: "我的自动扣费",
    intro: "这里是您与该商户签订的自动扣费协议、扣费记录和电子凭证。您可以随时解约，或对某笔扣款提出投诉。",
    none: "您与该商户没有自动扣费协议。",
    state: "状态",
    rules: "扣费规则",
    cap: "单笔上限",
    daily: "每日上限",
    next: "下次扣费",
    no_next: "无",
    by_use: "按次扣费，没有固定扣款日",
    usage_due: "按本期用量结算，约于",
    signed: "签约时间",
    valid_until: "有效期至",
    terminate: "解约",
    confirm_title: "确认解约？",
    confirm_body: "解约后商户将不能再从您的账户扣款；已完成的扣款不受影响。",
    confirm: "确认解约",
    cancel: "暂不解约",
    history: "扣费与退款记录",
    no_history: "暂无扣费记录。",
    when: "时间",
    what: "项目",
    amount: "金额",
    status: "状态",
    receipt: "电子凭证",
    complain: "投诉这笔扣款",
    kind: "投诉类型",
    description: "说明（选填）",
    send: "提交投诉",
    complained: "已投诉",
    refunded: "已退款",
    retry_at: "将于此时重试",
    confirm_hold: "去确认",
    refund: "退款",
    done_terminated: "已解约：商户不会再从您的账户扣款。",
    done_complained: "投诉已提交，商户须在时限内处理。",
};

const EN: Text = Text {
    title: "My automatic payments",
    intro: "Your automatic payment agreements with this merchant, what they charged, and their receipts. You can end an agreement at any time, or complain about a charge.",
    none: "You have no automatic payment agreement with this merchant.",
    state: "State",
    rules: "Rules",
    cap: "At most per charge",
    daily: "At most per day",
    next: "Next charge",
    no_next: "None",
    by_use: "Charged per use; no fixed charging day",
    usage_due: "For this period's usage, around",
    signed: "Signed",
    valid_until: "Valid until",
    terminate: "End this agreement",
    confirm_title: "End this agreement?",
    confirm_body: "The merchant will no longer be able to charge you; charges already made stay as they are.",
    confirm: "Yes, end it",
    cancel: "Keep it",
    history: "Charges and refunds",
    no_history: "Nothing charged yet.",
    when: "Time",
    what: "For",
    amount: "Amount",
    status: "Status",
    receipt: "Receipt",
    complain: "Complain about this charge",
    kind: "Kind",
    description: "What happened (optional)",
    send: "Send the complaint",
    complained: "Complaint filed",
    refunded: "refunded",
    retry_at: "tried again at",
    confirm_hold: "Confirm or decline",
    refund: "Refund",
    done_terminated: "Agreement ended: the merchant can no longer charge you.",
    done_complained: "Complaint sent; the merchant must answer it in time.",
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#222}\
section.contract{border:1px solid #ddd;border-radius:6px;padding:.4rem 1rem 1rem;margin:1rem 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#555}dd{margin:0}\
.banner{background:#e8f5e9;padding:.6rem}.confirm{background:#fff6e0;padding:.6rem}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.3rem;text-align:left;vertical-align:top}\
button{padding:.4rem .9rem}ul.rules{margin:.2rem 0;padding-left:1.2rem}";

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html(html! { (DOCTYPE) title { "404" } p { "This page does not exist." } }.into_string()))
        .into_response()
}

fn bad_parameter(name: &str, problem: &str) -> Response {
    let page = html! { (DOCTYPE) title { "400" } p id="error" { (name) ": " (problem) } };
    (StatusCode::BAD_REQUEST, Html(page.into_string())).into_response()
}

/// The page's query: the signature, then only parameters it takes, each well formed.
fn check(q: &HashMap<String, String>) -> Result<(), Response> {
    for (name, value) in q {
        let ok = match name.as_str() {
            "sig" => true,
            "lang" => matches!(value.as_str(), "zh" | "zh-CN" | "en"),
            "confirm" => value.len() <= 64,
            "done" => matches!(value.as_str(), "terminated" | "complained"),
            _ => return Err(bad_parameter(name, "is not a parameter of this page")),
        };
        if !ok {
            return Err(bad_parameter(name, &format!("{value:?} is not allowed")));
        }
    }
    Ok(())
}

async fn view(
    State(page): State<MePage>,
    Path((merchant, payer)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The signature first: without it nothing is said, not even what was wrong with the rest.
    let sig = q.get("sig").map(String::as_str).unwrap_or_default();
    if !page.links.verify(&merchant, &payer, sig) {
        return not_found();
    }
    if let Err(bad) = check(&q) {
        return bad;
    }
    let mut db = Db::Store(&page.store);
    let read = async {
        let contracts = payers::contracts_of(&mut db, &merchant, &payer).await?;
        let items = payers::items_of(&mut db, &merchant, &payer, ITEMS).await?;
        anyhow::Ok((contracts, items))
    };
    let (contracts, items) = match read.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reading the payer's page failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let en = q.get("lang").is_some_and(|l| l == "en");
    let base = format!("/me/{}/{}", encode(&merchant), encode(&payer));
    let ctx = Ctx { en, base, sig: sig.to_string(), lang: if en { "en" } else { "zh" } };
    let page = render(&ctx, &contracts, &items, &q);
    ([(axum::http::header::CACHE_CONTROL, "no-store")], Html(page.into_string())).into_response()
}

struct Ctx {
    en: bool,
    /// The page's path, without its query.
    base: String,
    sig: String,
    lang: &'static str,
}

impl Ctx {
    fn t(&self) -> &'static Text {
        if self.en { &EN } else { &ZH }
    }

    /// A path under the page's, with the signature and the language.
    fn link(&self, tail: &str, extra: &str) -> String {
        format!("{}{tail}?sig={}&lang={}{extra}", self.base, self.sig, self.lang)
    }

    fn money(&self, units: i64, currency: &str) -> String {
        Currency::parse(currency).map_or(format!("{units} {currency}"), |c| Money::new(units, c).payer_text(!self.en))
    }

    fn time(&self, ms: i64, zone: &str) -> String {
        let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
        from_millis(ms).with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
    }
}

fn state_text(state: &str, en: bool) -> &'static str {
    match (state, en) {
        (payers::ACTIVE, false) => "生效中",
        (payers::SUSPENDED, false) => "已暂停扣费",
        (payers::TERMINATED, false) => "已解约",
        (payers::EXPIRED, false) => "已到期",
        (payers::ACTIVE, true) => "Active",
        (payers::SUSPENDED, true) => "Charging paused",
        (payers::TERMINATED, true) => "Ended",
        (payers::EXPIRED, true) => "Expired",
        (_, false) => "未知",
        (_, true) => "Unknown",
    }
}

fn item_state_text(i: &Item, en: bool) -> &'static str {
    match (i.kind.as_str(), i.state.as_str(), en) {
        (payers::REFUND, _, false) => "已退款",
        (payers::REFUND, _, true) => "Refunded",
        (_, payers::SCHEDULED, false) => "扣款中",
        (_, payers::HELD, false) => "待您确认",
        (_, payers::SUCCEEDED, false) => "扣款成功",
        (_, payers::FAILED, false) => "扣款失败",
        (_, payers::REJECTED, false) => "未扣款",
        (_, payers::SCHEDULED, true) => "In progress",
        (_, payers::HELD, true) => "Waiting for you",
        (_, payers::SUCCEEDED, true) => "Charged",
        (_, payers::FAILED, true) => "Failed",
        (_, payers::REJECTED, true) => "Not charged",
        (_, _, false) => "未知",
        (_, _, true) => "Unknown",
    }
}

/// The complaint kinds a payer picks from, as `domain::complaint` names them.
fn kinds(en: bool) -> [(&'static str, &'static str); 4] {
    if en {
        [
            ("unauthorized_charge", "I did not authorize this charge"),
            ("amount_dispute", "The amount is wrong"),
            ("service_not_delivered", "The service was not delivered"),
            ("other", "Something else"),
        ]
    } else {
        [
            ("unauthorized_charge", "未经我授权的扣款"),
            ("amount_dispute", "扣款金额有误"),
            ("service_not_delivered", "未提供服务"),
            ("other", "其他问题"),
        ]
    }
}

/// The contract's next charge in words, or none.
fn next_charge(ctx: &Ctx, c: &ContractView) -> String {
    let t = ctx.t();
    if c.state != payers::ACTIVE {
        return t.no_next.to_string();
    }
    match c.mode.as_str() {
        "fixed" | "hybrid" if c.next_due_ms > 0 && c.next_due_ms < i64::MAX => {
            let pending = c.change_through >= 0 && c.next_period > c.change_through && c.change_amount > 0;
            let amount = if pending { c.change_amount } else { c.amount };
            let when = ctx.time(c.next_due_ms, &c.time_zone);
            if ctx.en {
                format!("{when}: {}", ctx.money(amount, &c.currency))
            } else {
                format!("{when}，{}", ctx.money(amount, &c.currency))
            }
        }
        "usage" if c.usage_end_ms > 0 => {
            format!("{} {}", t.usage_due, ctx.time(c.usage_end_ms + c.usage_grace_ms, &c.time_zone))
        }
        "event" => t.by_use.to_string(),
        _ => t.no_next.to_string(),
    }
}

fn daily_limit(ctx: &Ctx, c: &ContractView) -> String {
    let count = if c.daily_count_limit > 0 {
        c.daily_count_limit
    } else {
        i64::from(autodebit_domain::limits::DEFAULT_DAILY_COUNT)
    };
    let mut out = if ctx.en { format!("{count} charges") } else { format!("{count} 笔") };
    if c.daily_amount_limit > 0 {
        out.push_str(if ctx.en { ", " } else { "，" });
        out.push_str(&ctx.money(c.daily_amount_limit, &c.currency));
    }
    out
}

/// A contract's terms: its plan's, with the amount and cycle it is charged on now.
fn terms_of(c: &ContractView) -> Terms {
    let plan: Option<autodebit_proto::events::v1::PlanTerms> =
        c.terms.as_deref().and_then(|b| prost::Message::decode(b).ok());
    let currency = Currency::parse(&c.currency).unwrap_or(Currency::CNY);
    autodebit_runtime::codec::plan::contract_terms(
        Money::new(c.amount, currency),
        cycle_from_str(&c.cycle),
        plan.as_ref(),
    )
}

fn contract_section(ctx: &Ctx, c: &ContractView, terms: &Terms, confirm: Option<&str>) -> Markup {
    let t = ctx.t();
    let name = if terms.service_name.is_empty() { c.plan_id.clone() } else { terms.service_name.clone() };
    let open = matches!(c.state.as_str(), payers::ACTIVE | payers::SUSPENDED);
    html! {
        section class="contract" id={ "contract-" (c.contract_id) } {
            h2 { (name) @if !c.merchant_name.is_empty() { small { " · " (c.merchant_name) } } }
            dl {
                dt { (t.state) } dd class="state" { (state_text(&c.state, ctx.en)) }
                dt { (t.rules) } dd {
                    ul class="rules" { @for line in terms.lines(ctx.en) { li { (line) } } }
                }
                dt { (t.cap) } dd class="cap" { (terms.per_charge_cap.payer_text(!ctx.en)) }
                dt { (t.daily) } dd class="daily" { (daily_limit(ctx, c)) }
                dt { (t.next) } dd class="next" { (next_charge(ctx, c)) }
                dt { (t.signed) } dd { (ctx.time(c.signed_at_ms, &c.time_zone)) }
                @if c.expires_at_ms > 0 { dt { (t.valid_until) } dd { (ctx.time(c.expires_at_ms, &c.time_zone)) } }
            }
            @if open {
                @if confirm == Some(c.contract_id.as_str()) {
                    div class="confirm" id="confirm-terminate" {
                        h3 { (t.confirm_title) }
                        p { (t.confirm_body) }
                        form method="post" action=(ctx.link(&format!("/contracts/{}/terminate", encode(&c.contract_id)), "")) {
                            button id="terminate-confirm" type="submit" { (t.confirm) }
                        }
                        p { a href=(ctx.link("", "")) { (t.cancel) } }
                    }
                } @else {
                    form method="get" action=(ctx.base) {
                        input type="hidden" name="sig" value=(ctx.sig);
                        input type="hidden" name="lang" value=(ctx.lang);
                        input type="hidden" name="confirm" value=(c.contract_id);
                        button class="terminate" type="submit" { (t.terminate) }
                    }
                }
            }
        }
    }
}

fn item_row(ctx: &Ctx, i: &Item, contracts: &HashMap<&str, (String, &str)>) -> Markup {
    let t = ctx.t();
    let (service, zone) = contracts.get(i.contract_id.as_str()).cloned().unwrap_or((String::new(), "Asia/Shanghai"));
    let what = match (i.kind.as_str(), i.description.is_empty()) {
        (payers::REFUND, _) => format!("{} · {service}", t.refund),
        (_, true) => service,
        (_, false) => format!("{service} · {}", i.description),
    };
    let receipt = i.state == payers::SUCCEEDED;
    let can_complain = i.kind == payers::CHARGE && i.state == payers::SUCCEEDED && i.complained == 0;
    html! {
        tr class={ "item " (i.kind) } id={ "item-" (i.item_id) } {
            td { (ctx.time(i.at_ms, zone)) }
            td { (what) }
            td class="amount" { (ctx.money(i.amount, &i.currency)) }
            td class="status" {
                (item_state_text(i, ctx.en))
                @if i.refunded > 0 { br; small { (t.refunded) " " (ctx.money(i.refunded, &i.currency)) } }
                @if i.retry_at_ms > 0 { br; small { (t.retry_at) " " (ctx.time(i.retry_at_ms, zone)) } }
                @if i.state == payers::HELD && !i.hold_token.is_empty() {
                    br; a class="hold" href={ "/holds/" (i.hold_token) "?lang=" (ctx.lang) } { (t.confirm_hold) }
                }
                @if i.complained == 1 { br; small class="complained" { (t.complained) } }
            }
            td {
                @if receipt {
                    a class="receipt" href=(ctx.link(&format!("/receipts/{}", encode(&i.item_id)), "")) { (t.receipt) }
                }
                @if can_complain {
                    details class="complain" {
                        summary { (t.complain) }
                        form method="post" action=(ctx.link(&format!("/charges/{}/complaint", encode(&i.charge_id)), "")) {
                            label { (t.kind) " "
                                select name="kind" {
                                    @for (value, label) in kinds(ctx.en) { option value=(value) { (label) } }
                                }
                            }
                            br;
                            label { (t.description) br; textarea name="description" maxlength="1000" rows="3" cols="36" {} }
                            br;
                            button type="submit" { (t.send) }
                        }
                    }
                }
            }
        }
    }
}

fn render(ctx: &Ctx, contracts: &[ContractView], items: &[Item], q: &HashMap<String, String>) -> Markup {
    let t = ctx.t();
    let confirm = q.get("confirm").map(String::as_str);
    let terms: Vec<Terms> = contracts.iter().map(terms_of).collect();
    let by_contract: HashMap<&str, (String, &str)> = contracts
        .iter()
        .zip(&terms)
        .map(|(c, terms)| (c.contract_id.as_str(), (terms.service_name.clone(), c.time_zone.as_str())))
        .collect();
    html! {
        (DOCTYPE)
        html lang=(if ctx.en { "en" } else { "zh-CN" }) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                meta name="robots" content="noindex";
                title { (t.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (t.title) }
                @match q.get("done").map(String::as_str) {
                    Some("terminated") => { p class="banner" id="done" { (t.done_terminated) } }
                    Some("complained") => { p class="banner" id="done" { (t.done_complained) } }
                    _ => {}
                }
                p { (t.intro) }
                @if contracts.is_empty() { p id="none" { (t.none) } }
                @for (c, terms) in contracts.iter().zip(&terms) { (contract_section(ctx, c, terms, confirm)) }
                h2 { (t.history) }
                @if items.is_empty() {
                    p id="no-history" { (t.no_history) }
                } @else {
                    table id="history" {
                        thead { tr { th { (t.when) } th { (t.what) } th { (t.amount) } th { (t.status) } th {} } }
                        tbody { @for i in items { (item_row(ctx, i, &by_contract)) } }
                    }
                }
                p { a id="language" href={ (ctx.base) "?sig=" (ctx.sig) "&lang=" (if ctx.en { "zh" } else { "en" }) } {
                    @if ctx.en { "中文" } @else { "English" }
                } }
            }
        }
    }
}
