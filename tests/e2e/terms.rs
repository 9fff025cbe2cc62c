//! Payers see the terms they agree to as they are: the authorization page (over HTTP) and the
//! signing notice (over gRPC) state each charge mode's real rules — a fixed cycle's amount,
//! usage tiers and free allowance, per-use charging with its cap, both parts of a hybrid.
use crate::{scenario, support};

use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, GetSigningSessionRequest, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{
    AmountType, ChargeMode, Cycle, Money, NoticeKind, PlanTerms, PriceTier, SigningChannel, UsagePricing,
};
use autodebit_proto::notifier::v1::{ListNoticesRequest, notifier_service_client::NotifierServiceClient};
use scenario::{Merchant, authed, create_plan, onboard};
use support::{Backend, element_text, eventually, http_get, http_post, run_on};
use tonic::transport::Channel;

both!(
    a_fixed_cycle_plan_states_its_cycle_and_amount,
    a_usage_plan_states_its_tiers_and_free_allowance,
    an_event_triggered_plan_states_per_use_charging_and_its_cap,
    a_hybrid_plan_states_both_parts,
);

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

fn tiers(unit: &str, free: u64, fen: i64) -> Option<UsagePricing> {
    Some(UsagePricing {
        unit: unit.into(),
        tiers: vec![PriceTier { up_to: free, unit_price: 0 }, PriceTier { up_to: 0, unit_price: fen }],
        ..Default::default()
    })
}

/// What the payer saw and was told: the authorization page (Chinese and English) of a
/// session on a plan of `terms`, and the signing notice once they signed on it.
struct Seen {
    page: String,
    page_en: String,
    notice: String,
}

async fn sign_on_page(backend: Backend, credit_code: &str, terms: impl FnOnce(&mut PlanTerms)) -> Seen {
    let p = run_on(backend, 0, &[]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, credit_code).await;
    let plan_id = create_plan(&ch, &m, terms).await;
    let url = open(&ch, &m, &plan_id).await;
    let page = &url[url.find("/sign/").unwrap()..];

    let (status, html) = http_get(p.http, page).await;
    assert_eq!(status, 200, "{html}");
    let (_, html_en) = http_get(p.http, &format!("{page}?lang=en")).await;
    let code = element_text(&html, "code-hint").unwrap();
    assert_eq!(http_post(p.http, &format!("{page}/tick"), "agree=yes").await.0, 303);
    assert_eq!(http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await.0, 303);
    let notice = signing_notice(&ch, &m, page.trim_start_matches("/sign/")).await;
    Seen { page: html, page_en: html_en, notice }
}

/// Opens a signing session on `plan_id`; returns its authorization URL.
async fn open(ch: &Channel, m: &Merchant, plan_id: &str) -> String {
    let req = CreateSigningSessionRequest {
        plan_id: plan_id.into(),
        payer_id: "payer-terms".into(),
        channel: SigningChannel::H5 as i32,
        device_id: "phone-terms".into(),
        client_ip: "192.0.2.10".into(),
        return_url: "https://merchant.example/done".into(),
        ..Default::default()
    };
    let s = ContractsServiceClient::new(ch.clone()).create_signing_session(authed(req, &m.api_key)).await.unwrap();
    s.into_inner().session.unwrap().authorization_url
}

/// The text of the notice the payer got when session `session_id` signed its contract.
async fn signing_notice(ch: &Channel, m: &Merchant, session_id: &str) -> String {
    let req = GetSigningSessionRequest { session_id: session_id.into() };
    let s = ContractsServiceClient::new(ch.clone()).get_signing_session(authed(req, &m.api_key)).await.unwrap();
    let contract_id = s.into_inner().session.unwrap().contract_id;
    assert!(contract_id.starts_with("ct_"), "the session signed a contract");
    eventually("the signing notice", 30, || async {
        let req = ListNoticesRequest { contract_id: contract_id.clone() };
        let notices = NotifierServiceClient::new(ch.clone()).list_notices(authed(req, &m.api_key)).await.ok()?;
        let n = notices.into_inner().notices.into_iter().find(|n| n.kind == NoticeKind::ContractSigned as i32)?;
        // Less the notice's short link, which differs from run to run.
        Some(n.text.split("详情：").next().unwrap_or_default().to_string())
    })
    .await
}

/// The page lists exactly `lines` as its terms.
fn assert_terms(html: &str, lines: &[&str]) {
    let listed = html.split("<ul id=\"terms\">").nth(1).and_then(|r| r.split("</ul>").next()).expect("the terms");
    let expected: String = lines.iter().map(|l| format!("<li>{l}</li>")).collect();
    assert_eq!(listed, expected);
}

async fn a_fixed_cycle_plan_states_its_cycle_and_amount(backend: Backend) {
    let seen = sign_on_page(backend, "91330100MA2TRM0001", |t| {
        t.amount_type = AmountType::Fixed as i32;
        t.amount = cny(1_990);
        t.per_charge_cap = cny(1_990);
    })
    .await;
    assert_eq!(element_text(&seen.page, "charge-cycle").as_deref(), Some("每月"));
    assert_terms(&seen.page, &["每月扣款 19.90 CNY"]);
    assert_eq!(element_text(&seen.page, "example-charge").as_deref(), Some("每月 19.90 CNY"));
    assert_terms(&seen.page_en, &["Monthly: 19.90 CNY"]);
    assert_eq!(seen.notice, "您已开通自动扣费服务「视频会员」：每月扣款 19.90 CNY。扣款前会提前通知您，您可随时解约。");
}

async fn a_usage_plan_states_its_tiers_and_free_allowance(backend: Backend) {
    let seen = sign_on_page(backend, "91330100MA2TRM0002", |t| {
        t.service_name = "共享充电宝".into();
        t.charge_mode = ChargeMode::Usage as i32;
        t.usage = tiers("minute", 10, 50);
    })
    .await;
    assert_eq!(element_text(&seen.page, "charge-cycle").as_deref(), Some("每月"));
    assert_eq!(element_text(&seen.page, "amount-cap").as_deref(), Some("500.00 CNY"));
    assert_terms(
        &seen.page,
        &["每月按用量结算扣款一次，单笔不超过 500.00 CNY", "前 10 minute：免费", "超过 10 minute：每 minute 0.50 CNY"],
    );
    // The example is a month's usage priced by the tiers, not the cap.
    assert_eq!(element_text(&seen.page, "example-charge").as_deref(), Some("每月使用 20 minute：扣款 5.00 CNY"));
    assert_terms(
        &seen.page_en,
        &[
            "Monthly charge for what you used that period, at most 500.00 CNY",
            "The first 10 minute: free",
            "Above 10 minute: 0.50 CNY per minute",
        ],
    );
    assert_eq!(
        seen.notice,
        "您已开通自动扣费服务「共享充电宝」：每月按用量结算扣款一次，单笔不超过 500.00 CNY；前 10 minute：免费；\
         超过 10 minute：每 minute 0.50 CNY。扣款前会提前通知您，您可随时解约。"
    );
}

async fn an_event_triggered_plan_states_per_use_charging_and_its_cap(backend: Backend) {
    let seen = sign_on_page(backend, "91330100MA2TRM0003", |t| {
        t.service_name = "共享单车".into();
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.per_charge_cap = cny(5_000);
    })
    .await;
    assert_eq!(element_text(&seen.page, "charge-cycle").as_deref(), Some("按次"));
    assert_terms(&seen.page, &["按次扣费：每次使用后扣款，单笔不超过 50.00 CNY"]);
    assert_eq!(element_text(&seen.page_en, "charge-cycle").as_deref(), Some("Each use"));
    assert_terms(&seen.page_en, &["Charged each time you use the service, at most 50.00 CNY a charge"]);
    assert!(!seen.notice.contains("每月"), "no monthly charge: {}", seen.notice);
    assert_eq!(
        seen.notice,
        "您已开通自动扣费服务「共享单车」：按次扣费：每次使用后扣款，单笔不超过 50.00 CNY。扣款前会提前通知您，您可随时解约。"
    );
}

async fn a_hybrid_plan_states_both_parts(backend: Backend) {
    let seen = sign_on_page(backend, "91330100MA2TRM0004", |t| {
        t.service_name = "云存储".into();
        t.charge_mode = ChargeMode::Hybrid as i32;
        t.cycle = Cycle::Yearly as i32;
        t.amount_type = AmountType::Fixed as i32;
        t.amount = cny(120_000);
        t.per_charge_cap = cny(120_000);
        t.first_charge_at_signing = true;
        t.usage = tiers("GB", 100, 200);
    })
    .await;
    assert_eq!(element_text(&seen.page, "charge-cycle").as_deref(), Some("每年"));
    let lines = [
        "每年扣款 1200.00 CNY",
        "签约时扣首期",
        "每月按用量结算扣款一次，单笔不超过 1200.00 CNY",
        "前 100 GB：免费",
        "超过 100 GB：每 GB 2.00 CNY",
    ];
    assert_terms(&seen.page, &lines);
    assert_eq!(
        element_text(&seen.page, "example-charge").as_deref(),
        Some("每年 1200.00 CNY；每月使用 110 GB：扣款 20.00 CNY（另计）")
    );
    assert_eq!(
        seen.notice,
        format!("您已开通自动扣费服务「云存储」：{}。扣款前会提前通知您，您可随时解约。", lines.join("；"))
    );
}
