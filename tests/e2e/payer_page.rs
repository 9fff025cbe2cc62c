//! The payer's own page, reached from a notice's landing page: their contracts with the
//! merchant and the rules of each in plain words, the next charge, their charges and refunds
//! with receipts, a complaint about a charge, and a termination with a confirmation — on
//! SQLite and PostgreSQL; then in headless Chromium, in Chinese and English, with screenshots.
use crate::{scenario, support};

use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, ListComplaintsRequest, RefundChargeRequest,
    charger_service_client::ChargerServiceClient, complaints_service_client::ComplaintsServiceClient,
};
use autodebit_proto::contracts::v1::{GetContractRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{ChargeMode, Cycle, Money, TerminationMode};
use autodebit_proto::notifier::v1::{ListNoticesRequest, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, TriggerChargeRequest, scheduler_service_client::SchedulerServiceClient,
};
use fantoccini::{Client, Locator};
use scenario::{Merchant, authed, create_plan as plan, onboard, sign_on as sign};
use std::time::Duration;
use support::{Backend, TestApp, element_text, eventually, http_get, http_post};
use tonic::transport::Channel;

both!(a_payer_sees_their_contracts_complains_and_ends_one_on_their_page);

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

/// A succeeded triggered charge of `fen` on `contract`.
async fn charged(ch: &Channel, m: &Merchant, contract: &str, key: &str, fen: i64) -> String {
    let req = TriggerChargeRequest {
        contract_id: contract.into(),
        amount: cny(fen),
        reason: "ride".into(),
        idempotency_key: key.into(),
    };
    let id = SchedulerServiceClient::new(ch.clone())
        .trigger_charge(authed(req, &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .charge_id;
    let charge_id = id.clone();
    eventually(&format!("charge {id} to succeed"), 30, || {
        let id = id.clone();
        async move {
            let c = ChargerServiceClient::new(ch.clone())
                .get_charge(support::op(GetChargeRequest { charge_id: id }))
                .await
                .ok()?
                .into_inner()
                .charge?;
            (c.state == ChargeState::Succeeded as i32).then_some(())
        }
    })
    .await;
    charge_id
}

/// The payer's page's path, from the link on the landing page of the contract's first notice.
async fn page_path(app: &TestApp, contract: &str) -> String {
    let ch = app.channel().await;
    let link = eventually("the payer's first notice", 30, || async {
        let req = ListNoticesRequest { contract_id: contract.into() };
        let notices = NotifierServiceClient::new(ch.clone()).list_notices(support::op(req)).await.ok()?.into_inner();
        notices.notices.into_iter().map(|n| n.link).find(|l| !l.is_empty())
    })
    .await;
    let at = link.find("/n/").expect("a short link");
    let (status, landing) = http_get(app.http, &link[at..]).await;
    assert_eq!(status, 200, "{landing}");
    let start = landing.find("id=\"me\" href=\"").expect("the landing page links the payer's page") + 14;
    let end = start + landing[start..].find('"').unwrap();
    landing[start..end].replace("&amp;", "&")
}

/// The page's path without its language.
fn without_lang(path: &str) -> String {
    path.split("&lang=").next().unwrap().to_string()
}

async fn a_payer_sees_their_contracts_complains_and_ends_one_on_their_page(backend: Backend) {
    let p = support::run_on(backend, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2PAY0001").await;
    let other = onboard(&ch, "91330100MA2PAY0002").await;
    let rides = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.service_name = "共享单车骑行".into();
    })
    .await;
    let monthly = sign(&ch, &m, &m.plan_id, "payer-me", 2500, Cycle::Monthly).await;
    let per_ride = sign(&ch, &m, &rides, "payer-me", 500, Cycle::Monthly).await;
    // The same payer id at another merchant is another person.
    let elsewhere = sign(&ch, &other, &other.plan_id, "payer-me", 900, Cycle::Monthly).await;
    for c in [&monthly, &per_ride] {
        eventually("the schedule", 30, || async {
            let req = GetScheduleRequest { contract_id: c.to_string() };
            SchedulerServiceClient::new(ch.clone()).get_schedule(support::op(req)).await.ok()
        })
        .await;
    }
    let first = charged(&ch, &m, &per_ride, "r1", 300).await;
    let second = charged(&ch, &m, &per_ride, "r2", 450).await;
    let refund = RefundChargeRequest {
        charge_id: second.clone(),
        amount: cny(200),
        reason: "late bike".into(),
        idempotency_key: "refund-1".into(),
    };
    let refund_id = ChargerServiceClient::new(ch.clone())
        .refund_charge(authed(refund, &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap()
        .refund_id;

    let path = without_lang(&page_path(&p, &per_ride).await);
    assert!(path.starts_with(&format!("/me/{}/payer-me?sig=", m.merchant_id)), "{path}");
    // Both contracts, their rules in plain words, the charges and the refund with receipts.
    let page = eventually("the page to show the refund", 30, || async {
        let (status, page) = http_get(p.http, &path).await;
        assert_eq!(status, 200, "{page}");
        page.contains(&format!("id=\"item-{refund_id}\"")).then_some(page)
    })
    .await;
    for c in [&monthly, &per_ride] {
        assert!(page.contains(&format!("id=\"contract-{c}\"")), "{page}");
    }
    assert!(!page.contains(&elsewhere), "another merchant's contract is not on this page");
    assert!(page.contains("共享单车骑行"), "{page}");
    assert!(page.contains("每月扣款一次，每次不超过 25.00 CNY"), "the cycle and amount: {page}");
    assert!(page.contains("按次扣费"), "the per-use rule: {page}");
    assert!(page.contains("生效中"), "{page}");
    assert!(page.contains("¥4.50") && page.contains("已退款 ¥2.00"), "{page}");
    assert_eq!(page.matches("class=\"receipt\"").count(), 3, "two charges and a refund: {page}");
    let (status, english) = http_get(p.http, &format!("{path}&lang=en")).await;
    assert_eq!(status, 200);
    assert!(english.contains("My automatic payments") && english.contains("Active"), "{english}");
    assert!(english.contains("Monthly: one charge of at most 25.00 CNY"), "{english}");

    // The next charge of the monthly contract, with its date and amount.
    let section = &page[page.find(&format!("id=\"contract-{monthly}\"")).unwrap()..];
    let next = element_text(&section.replacen("class=\"next\"", "id=\"next\"", 1), "next").unwrap();
    assert!(next.contains("¥25.00") && next.chars().filter(char::is_ascii_digit).count() >= 12, "{next}");

    // A wrong signature, another payer or another merchant: no such page; bad parameters named.
    let sig = path.split("sig=").nth(1).unwrap();
    for wrong in [
        format!("/me/{}/payer-me?sig={}", m.merchant_id, "0".repeat(64)),
        format!("/me/{}/payer-other?sig={sig}", m.merchant_id),
        format!("/me/{}/payer-me?sig={sig}", other.merchant_id),
        format!("/me/{}/payer-me", m.merchant_id),
    ] {
        let (status, _) = http_get(p.http, &wrong).await;
        assert_eq!(status, 404, "{wrong}");
    }
    let (_, head) = http_get_head(&p, &path).await;
    assert!(head.contains("cache-control: no-store"), "{head}");
    let (status, body) = http_get(p.http, &format!("{path}&colour=red")).await;
    assert_eq!((status, element_text(&body, "error").unwrap().starts_with("colour")), (400, true), "{body}");

    // The receipt, through the page's signature.
    let (status, head) = http_get_head(&p, &format!("/me/{}/payer-me/receipts/{first}?sig={sig}", m.merchant_id)).await;
    assert_eq!(status, 303, "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("location: ")).unwrap().to_string();
    let (status, receipt) = http_get(p.http, &location).await;
    assert_eq!(status, 200);
    assert!(receipt.contains(&first) && receipt.contains("3.00"), "{receipt}");
    let (status, _) =
        http_get(p.http, &format!("/me/{}/payer-me/receipts/{first}?sig={}", m.merchant_id, "1".repeat(64))).await;
    assert_eq!(status, 404);

    // A complaint about a charge: bad input named and nothing filed; then filed once.
    let complain = |charge: &str| format!("/me/{}/payer-me/charges/{charge}/complaint?sig={sig}", m.merchant_id);
    let (status, body) = http_post(p.http, &complain(&first), "kind=annoyed").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("kind: must be"), "{body}");
    let (status, body) =
        http_post(p.http, &complain(&first), &format!("kind=other&description={}", "x".repeat(1001))).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_post(p.http, &complain(&first), "kind=other&colour=red").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("colour: is not a field"), "{body}");
    let elsewhere_charge = {
        let contract = sign(&ch, &other, &rides_of(&ch, &other).await, "payer-me", 500, Cycle::Monthly).await;
        eventually("the other schedule", 30, || async {
            let req = GetScheduleRequest { contract_id: contract.clone() };
            SchedulerServiceClient::new(ch.clone()).get_schedule(support::op(req)).await.ok()
        })
        .await;
        charged(&ch, &other, &contract, "o1", 100).await
    };
    let (status, _) = http_post(p.http, &complain(&elsewhere_charge), "kind=other").await;
    assert_eq!(status, 404, "another merchant's charge does not exist here");
    assert!(complaints(&ch).await.is_empty(), "nothing was filed");
    let (status, head) =
        http_post(p.http, &complain(&first), "kind=amount_dispute&description=%E9%87%91%E9%A2%9D%E4%B8%8D%E5%AF%B9")
            .await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("done=complained"), "{head}");
    let filed = complaints(&ch).await;
    assert_eq!(filed.len(), 1);
    assert_eq!(
        (filed[0].charge_id.as_str(), filed[0].kind.as_str(), filed[0].source.as_str(), filed[0].description.as_str()),
        (first.as_str(), "amount_dispute", "payer", "金额不对")
    );
    let (status, body) = http_post(p.http, &complain(&first), "kind=other").await;
    assert_eq!(status, 409, "a second complaint on the charge: {body}");
    eventually("the page to show the complaint", 30, || async {
        let (_, page) = http_get(p.http, &path).await;
        page.contains("已投诉").then_some(())
    })
    .await;

    // Ending a contract: a confirmation first, then mode PAYER; a second try is refused.
    let (_, confirm) = http_get(p.http, &format!("{path}&confirm={monthly}")).await;
    assert!(confirm.contains("id=\"terminate-confirm\""), "{confirm}");
    let terminate = format!("/me/{}/payer-me/contracts/{monthly}/terminate?sig={sig}", m.merchant_id);
    let (status, _) =
        http_post(p.http, &format!("/me/{}/payer-me/contracts/{elsewhere}/terminate?sig={sig}", m.merchant_id), "")
            .await;
    assert_eq!(status, 404, "another merchant's contract does not exist here");
    let (status, head) = http_post(p.http, &terminate, "").await;
    assert_eq!(status, 303, "{head}");
    let c = ContractsServiceClient::new(ch.clone())
        .get_contract(support::op(GetContractRequest { contract_id: monthly.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    assert_eq!(c.termination_mode, TerminationMode::Payer as i32, "{c:?}");
    let (status, body) = http_post(p.http, &terminate, "").await;
    assert_eq!(status, 409, "{body}");
    let page = eventually("the page to show the contract ended", 30, || async {
        let (_, page) = http_get(p.http, &format!("{path}&done=terminated")).await;
        let section = &page[page.find(&format!("id=\"contract-{monthly}\""))?..];
        section[..section.find("</section>")?].contains("已解约").then_some(page)
    })
    .await;
    assert!(element_text(&page, "done").unwrap().contains("已解约"), "{page}");
    let elsewhere_state = ContractsServiceClient::new(ch.clone())
        .get_contract(support::op(GetContractRequest { contract_id: elsewhere.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    assert_eq!(elsewhere_state.termination_mode, 0, "the other merchant's contract is untouched");
}

/// An event-triggered plan of `m`'s.
async fn rides_of(ch: &Channel, m: &Merchant) -> String {
    plan(ch, m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await
}

async fn complaints(ch: &Channel) -> Vec<autodebit_proto::charger::v1::Complaint> {
    let req = ListComplaintsRequest::default();
    ComplaintsServiceClient::new(ch.clone()).list_complaints(support::op(req)).await.unwrap().into_inner().complaints
}

/// A GET answered with its status and headers (one `name: value` line each).
async fn http_get_head(app: &TestApp, path: &str) -> (u16, String) {
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://{}{path}", app.http))
        .send()
        .await
        .unwrap();
    let head = answer.headers().iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or_default())).collect();
    (answer.status().as_u16(), head)
}

fn screenshot(png: &[u8], name: &str) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(dir) = std::env::var("AUTODEBIT_SCREENSHOTS") {
        std::fs::write(std::path::Path::new(&dir).join(format!("payer-page-{name}.png")), png).unwrap();
    }
}

/// In Chromium: the page in Chinese and in English; a complaint and a termination through its
/// forms, each answered on the page.
#[tokio::test]
async fn the_payers_page_works_in_a_browser() {
    use futures::FutureExt;
    let p = support::run_on(Backend::Sqlite, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2PAY0003").await;
    let rides = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.service_name = "共享单车骑行".into();
    })
    .await;
    let monthly = sign(&ch, &m, &m.plan_id, "payer-browser", 2500, Cycle::Monthly).await;
    let per_ride = sign(&ch, &m, &rides, "payer-browser", 500, Cycle::Monthly).await;
    eventually("the schedule", 30, || async {
        let req = GetScheduleRequest { contract_id: per_ride.clone() };
        SchedulerServiceClient::new(ch.clone()).get_schedule(support::op(req)).await.ok()
    })
    .await;
    let charge = charged(&ch, &m, &per_ride, "b1", 300).await;
    let refunded = charged(&ch, &m, &per_ride, "b2", 450).await;
    let refund = RefundChargeRequest {
        charge_id: refunded,
        amount: cny(450),
        reason: "bike broken".into(),
        idempotency_key: "refund-b2".into(),
    };
    ChargerServiceClient::new(ch.clone()).refund_charge(authed(refund, &m.api_key)).await.unwrap();
    let path = without_lang(&page_path(&p, &monthly).await);
    eventually("the page to list the charges and the refund", 30, || async {
        let (_, page) = http_get(p.http, &path).await;
        (page.matches("class=\"receipt\"").count() == 3).then_some(())
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let (driver, browser) = support::browser(profile.path(), (1000, 1400)).await;
    let base = format!("http://{}", p.http);
    let run =
        std::panic::AssertUnwindSafe(in_the_browser(&browser, &base, &path, &monthly, &charge)).catch_unwind().await;
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
    let filed = complaints(&ch).await;
    assert_eq!((filed.len(), filed[0].source.as_str()), (1, "payer"));
}

async fn in_the_browser(b: &Client, base: &str, path: &str, monthly: &str, charge: &str) {
    let wait = Duration::from_secs(10);
    b.goto(&format!("{base}{path}&lang=en")).await.unwrap();
    let title = b.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
    assert_eq!(title, "My automatic payments");
    screenshot(&b.screenshot().await.unwrap(), "en");
    b.goto(&format!("{base}{path}")).await.unwrap();
    assert_eq!(b.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), "我的自动扣费");
    screenshot(&b.screenshot().await.unwrap(), "zh");

    // A complaint through the charge's form.
    b.find(Locator::Css(&format!("#item-{charge} details.complain summary"))).await.unwrap().click().await.unwrap();
    let form = b.find(Locator::Css(&format!("#item-{charge} details.complain form"))).await.unwrap();
    form.find(Locator::Css("select[name=kind] option[value=service_not_delivered]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.find(Locator::Css("textarea")).await.unwrap().send_keys("车没开锁").await.unwrap();
    form.find(Locator::Css("button")).await.unwrap().click().await.unwrap();
    let done = b.wait().at_most(wait).for_element(Locator::Id("done")).await.unwrap().text().await.unwrap();
    assert!(done.contains("投诉已提交"), "{done}");

    // Ending the monthly contract: the button asks first.
    b.find(Locator::Css(&format!("#contract-{monthly} button.terminate"))).await.unwrap().click().await.unwrap();
    b.wait().at_most(wait).for_element(Locator::Id("terminate-confirm")).await.unwrap().click().await.unwrap();
    let done = b.wait().at_most(wait).for_element(Locator::Id("done")).await.unwrap().text().await.unwrap();
    assert!(done.contains("已解约"), "{done}");
}
