//! Signing on the hosted authorization page: double confirmation, funnel steps, sign-time
//! risk, expiry, and bad input — driven over gRPC and plain HTTP against `autodebit run`.
use crate::{scenario, support};

use autodebit::platform::Service;
use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::contracts::v1::{
    ContractState, CreateSigningSessionRequest, GetContractRequest, GetSigningSessionRequest,
    ReviewSigningSessionRequest, SigningSession, SigningState, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{SigningChannel, SigningStep};
use scenario::{Merchant, OPERATOR_KEY, authed, onboard};
use support::{Backend, TestApp, element_text, eventually, http_get, http_post, path_of};
use tonic::Code;
use tonic::transport::Channel;

/// The contracts service on either backend: all five services on SQLite, or the contracts
/// service alone on a fresh PostgreSQL database.
async fn start(backend: Backend) -> TestApp {
    let app = TestApp::builder().backend(backend).args(&["--test-clock"]);
    match backend {
        Backend::Sqlite => app.spawn().await,
        Backend::Postgres => app.services(&[Service::Contracts]).spawn().await,
    }
}

both!(
    payer_ticks_confirms_and_the_contract_is_signed,
    one_device_many_accounts_waits_for_review_and_far_away_needs_sms,
    sessions_expire_and_bad_requests_name_the_field,
    a_used_idempotency_key_opens_its_session_only_for_the_same_request,
    bad_page_parameters_answer_400_and_record_nothing,
);

fn session_request(m: &Merchant, payer: &str, device: &str, ip: &str) -> CreateSigningSessionRequest {
    CreateSigningSessionRequest {
        plan_id: m.plan_id.clone(),
        payer_id: payer.into(),
        channel: SigningChannel::H5 as i32,
        device_id: device.into(),
        client_ip: ip.into(),
        return_url: "https://merchant.example/done".into(),
        language: String::new(),
        merchant_contract_code: String::new(),
        idempotency_key: String::new(),
        payer_phone: String::new(),
    }
}

async fn open(ch: &Channel, m: &Merchant, payer: &str, device: &str, ip: &str) -> SigningSession {
    let mut c = ContractsServiceClient::new(ch.clone());
    c.create_signing_session(authed(session_request(m, payer, device, ip), &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

async fn get(ch: &Channel, m: &Merchant, id: &str) -> SigningSession {
    let mut c = ContractsServiceClient::new(ch.clone());
    c.get_signing_session(authed(GetSigningSessionRequest { session_id: id.into() }, &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
}

async fn payer_ticks_confirms_and_the_contract_is_signed(backend: Backend) {
    let p = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2SGN0001").await;
    let s = open(&ch, &m, "payer-sign", "device-1", "192.0.2.10").await;
    assert_eq!(s.state, SigningState::Open as i32);
    assert!(s.authorization_url.starts_with(&format!("http://{}/sign/ss_", p.http)), "{}", s.authorization_url);
    let page = path_of(&s.authorization_url);

    let (status, html) = http_get(p.http, &page).await;
    assert_eq!(status, 200);
    // Reloads, in either language, are not further views.
    assert_eq!(http_get(p.http, &page).await.0, 200);
    assert_eq!(http_get(p.http, &format!("{page}?lang=en")).await.0, 200);
    assert_eq!(element_text(&html, "service-name").as_deref(), Some("视频会员"));
    assert_eq!(element_text(&html, "charge-cycle").as_deref(), Some("每月"));
    assert_eq!(element_text(&html, "amount-cap").as_deref(), Some("500.00 CNY"));
    assert!(element_text(&html, "risk-notice").unwrap().contains("解约"));
    assert!(element_text(&html, "example-charge").unwrap().contains("500.00 CNY"));
    assert!(html.contains("id=\"customer-service\" href=\"mailto:ops@example.cn\""));
    let code = element_text(&html, "code-hint").expect("the simulator's code is shown");

    // Confirming before ticking the agreement does nothing.
    let (status, _) = http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await;
    assert_eq!(status, 303);
    assert_eq!(get(&ch, &m, &s.session_id).await.state, SigningState::Open as i32);
    assert_eq!(http_post(p.http, &format!("{page}/tick"), "agree=yes").await.0, 303);
    // The browser follows the redirect back to the page.
    assert_eq!(http_get(p.http, &format!("{page}?lang=zh")).await.0, 200);
    // A wrong credential does nothing either.
    http_post(p.http, &format!("{page}/confirm"), "code=999999x").await;
    assert_eq!(get(&ch, &m, &s.session_id).await.state, SigningState::Open as i32);
    assert_eq!(http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await.0, 303);

    let done = get(&ch, &m, &s.session_id).await;
    assert_eq!(done.state, SigningState::Confirmed as i32);
    let steps: Vec<i32> = done.steps.iter().map(|s| s.step).collect();
    assert_eq!(
        steps,
        vec![SigningStep::PageViewed as i32, SigningStep::AgreementTicked as i32, SigningStep::Confirmed as i32],
        "every step is recorded once"
    );
    let mut c = ContractsServiceClient::new(ch.clone());
    let contract = c
        .get_contract(authed(
            GetContractRequest { contract_id: done.contract_id.clone(), merchant_contract_code: String::new() },
            &m.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    assert_eq!(contract.state, ContractState::Active as i32);
    assert_eq!(contract.payer_id, "payer-sign");
    assert_eq!(contract.plan_id, m.plan_id);
    assert!(contract.expires_at_ms > contract.signed_at_ms);
    let (_, html) = http_get(p.http, &page).await;
    assert!(html.contains("id=\"done\""), "the page says it is done");

    // English on request.
    let s2 = open(&ch, &m, "payer-en", "device-2", "192.0.2.11").await;
    let (_, html) = http_get(p.http, &format!("{}?lang=en", path_of(&s2.authorization_url))).await;
    assert!(html.contains("Set up automatic payments"));
    assert_eq!(element_text(&html, "charge-cycle").as_deref(), Some("Monthly"));
    // Abandoning ends it.
    http_post(p.http, &format!("{}/abandon", path_of(&s2.authorization_url)), "").await;
    assert_eq!(get(&ch, &m, &s2.session_id).await.state, SigningState::Abandoned as i32);
    assert_eq!(http_get(p.http, "/sign/ss_nope").await.0, 404);
}

async fn one_device_many_accounts_waits_for_review_and_far_away_needs_sms(backend: Backend) {
    let p = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2RSK0001").await;
    for payer in ["a1", "a2", "a3"] {
        assert_eq!(open(&ch, &m, payer, "shared-phone", "192.0.2.20").await.state, SigningState::Open as i32);
    }
    let held = open(&ch, &m, "a4", "shared-phone", "192.0.2.20").await;
    assert_eq!(held.state, SigningState::HeldForReview as i32);
    assert_eq!(held.steps[0].step, SigningStep::HeldForReview as i32);
    assert!(held.steps[0].detail.contains("shared-phone"), "{}", held.steps[0].detail);
    let page = path_of(&held.authorization_url);
    let (_, html) = http_get(p.http, &page).await;
    assert!(html.contains("id=\"held\""));
    http_post(p.http, &format!("{page}/tick"), "agree=yes").await;
    assert!(!get(&ch, &m, &held.session_id).await.agreement_ticked, "a held session takes no step");
    let mut c = ContractsServiceClient::new(ch.clone());
    let review =
        ReviewSigningSessionRequest { session_id: held.session_id.clone(), approve: true, reason: String::new() };
    assert_eq!(
        c.review_signing_session(authed(review.clone(), &m.api_key)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let approved = c.review_signing_session(authed(review, OPERATOR_KEY)).await.unwrap().into_inner().session.unwrap();
    assert_eq!(approved.state, SigningState::Open as i32);

    // The payer first signed from Beijing; now from Shanghai: an SMS check comes first.
    let far = open(&ch, &m, "a1", "own-phone", "198.51.100.7").await;
    assert!(far.sms_verification_required);
    assert!(far.steps.iter().any(|s| s.step == SigningStep::SmsRequired as i32 && s.detail.contains("shanghai")));
    let page = path_of(&far.authorization_url);
    let (_, html) = http_get(p.http, &page).await;
    let sms = element_text(&html, "sms-hint").expect("the simulator shows the SMS code");
    let code = element_text(&html, "code-hint").unwrap();
    http_post(p.http, &format!("{page}/tick"), "agree=yes").await;
    http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await;
    assert_eq!(get(&ch, &m, &far.session_id).await.state, SigningState::Open as i32, "not before the SMS check");
    http_post(p.http, &format!("{page}/sms"), "code=000000x").await;
    assert!(get(&ch, &m, &far.session_id).await.sms_verification_required);
    http_post(p.http, &format!("{page}/sms"), &format!("code={sms}")).await;
    http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await;
    assert_eq!(get(&ch, &m, &far.session_id).await.state, SigningState::Confirmed as i32);
}

async fn sessions_expire_and_bad_requests_name_the_field(backend: Backend) {
    let p = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2EXP0001").await;
    let other = onboard(&ch, "91330100MA2EXP0002").await;
    let s = open(&ch, &m, "payer-x", "device-x", "192.0.2.30").await;
    let mut admin = AdminServiceClient::new(ch.clone());
    admin.advance_clock(support::op(AdvanceClockRequest { seconds: 11 * 60 })).await.unwrap();
    eventually("the session to expire", 20, || {
        let ch = ch.clone();
        let (m, id) = (&m, s.session_id.clone());
        async move { (get(&ch, m, &id).await.state == SigningState::Expired as i32).then_some(()) }
    })
    .await;

    let mut c = ContractsServiceClient::new(ch.clone());
    let cases: Vec<(Box<dyn Fn(&mut CreateSigningSessionRequest)>, &str)> = vec![
        (Box::new(|r| r.plan_id = String::new()), "plan_id"),
        (Box::new(|r| r.client_ip = "not-an-ip".into()), "client_ip"),
        (Box::new(|r| r.channel = 0), "channel"),
        (Box::new(|r| r.device_id = String::new()), "device_id"),
        (Box::new(|r| r.return_url = "javascript:alert(1)".into()), "return_url"),
        (Box::new(|r| r.payer_id = "bad payer".into()), "payer_id"),
        (Box::new(|r| r.language = "fr".into()), "language"),
    ];
    for (change, field) in cases {
        let mut r = session_request(&m, "p", "d", "192.0.2.1");
        change(&mut r);
        let err = c.create_signing_session(authed(r, &m.api_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "{} names {field}", err.message());
    }
    let err =
        c.create_signing_session(authed(session_request(&m, "p", "d", "192.0.2.1"), &other.api_key)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "another merchant's plan is as good as missing");
    assert!(err.message().starts_with("plan_id"), "{}", err.message());
    let err = c.create_signing_session(session_request(&m, "p", "d", "192.0.2.1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A merchant contract code already in use cannot be signed again.
    let mut import = scenario::sign_request(&m, "payer-code", 100);
    import.merchant_contract_code = "C-0001".into();
    c.sign_contract(authed(import, OPERATOR_KEY)).await.unwrap();
    let mut again = session_request(&m, "payer-code2", "d", "192.0.2.1");
    again.merchant_contract_code = "C-0001".into();
    assert_eq!(c.create_signing_session(authed(again, &m.api_key)).await.unwrap_err().code(), Code::AlreadyExists);
    let err = c
        .get_signing_session(authed(GetSigningSessionRequest { session_id: s.session_id.clone() }, &other.api_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn a_used_idempotency_key_opens_its_session_only_for_the_same_request(backend: Backend) {
    let p = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2IDK0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let keyed = |payer: &str, device: &str| {
        let mut r = session_request(&m, payer, device, "192.0.2.40");
        r.idempotency_key = "checkout-77".into();
        authed(r, &m.api_key)
    };
    let first = c.create_signing_session(keyed("payer-k1", "dev-k")).await.unwrap().into_inner().session.unwrap();
    // The same request again: the same session.
    let again = c.create_signing_session(keyed("payer-k1", "dev-k")).await.unwrap().into_inner().session.unwrap();
    assert_eq!((again.session_id.as_str(), again.payer_id.as_str()), (first.session_id.as_str(), "payer-k1"));
    // The key with another payer, or another device, is refused: never the first payer's session.
    for (payer, device) in [("payer-k2", "dev-k"), ("payer-k1", "dev-other")] {
        let err = c.create_signing_session(keyed(payer, device)).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{payer} on {device}: {err:?}");
        assert!(err.message().starts_with("idempotency_key"), "{}", err.message());
    }
    let s = get(&ch, &m, &first.session_id).await;
    assert_eq!((s.payer_id.as_str(), s.steps.len()), ("payer-k1", 0), "the session is untouched");
}

async fn bad_page_parameters_answer_400_and_record_nothing(backend: Backend) {
    let p = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2PRM0001").await;
    let s = open(&ch, &m, "payer-p", "device-p", "192.0.2.50").await;
    let page = path_of(&s.authorization_url);
    let long = "x".repeat(201);
    let gets = [
        (format!("{page}?lang=%0d%0aSet-Cookie:%20a=b"), "lang"),
        (format!("{page}?lang=fr"), "lang"),
        (format!("{page}?error={long}"), "error"),
        (format!("{page}?error=a%0d%0ab"), "error"),
        (format!("{page}?debug=1"), "debug"),
    ];
    for (path, name) in &gets {
        let (status, body) = http_get(p.http, path).await;
        assert_eq!(status, 400, "GET {path}: {body}");
        assert!(element_text(&body, "error").unwrap().starts_with(&format!("{name}: ")), "{body}");
    }
    let posts = [
        (format!("{page}/tick?lang=%0d%0aLocation:%20https://evil.example"), "agree=yes", "lang"),
        (format!("{page}/tick"), "agree=no", "agree"),
        (format!("{page}/tick"), "agree=yes&extra=1", "extra"),
        (format!("{page}/abandon?lang=xx"), "", "lang"),
        (format!("{page}/abandon"), "why=1", "why"),
        (format!("{page}/sms?lang=%0a"), "code=123456", "lang"),
        (format!("{page}/confirm"), "code=12%0d%0a34", "code"),
        (format!("{page}/confirm?lang=en&x=1"), "code=123456", "x"),
    ];
    for (path, form, name) in &posts {
        let (status, raw) = http_post(p.http, path, form).await;
        assert_eq!(status, 400, "POST {path} {form}: {raw}");
        assert!(raw.contains(&format!("<p id=\"error\">{name}: ")), "{raw}");
    }
    let untouched = get(&ch, &m, &s.session_id).await;
    assert_eq!(untouched.state, SigningState::Open as i32);
    assert!(untouched.steps.is_empty(), "nothing was recorded: {:?}", untouched.steps);
    // The same requests well formed go through.
    assert_eq!(http_get(p.http, &format!("{page}?lang=en")).await.0, 200);
    assert_eq!(http_post(p.http, &format!("{page}/tick?lang=en"), "agree=yes").await.0, 303);
    let steps: Vec<i32> = get(&ch, &m, &s.session_id).await.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, vec![SigningStep::PageViewed as i32, SigningStep::AgreementTicked as i32]);
}
