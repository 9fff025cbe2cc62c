//! Signing at WeChat Pay: a merchant configured for WeChat Pay opens a signing session on a
//! `wechatpay` plan, the payer signs at (the mock) WeChat Pay, and WeChat Pay's signed notice
//! confirms the session and signs the contract; terminating it deletes it at WeChat Pay, and
//! WeChat Pay's own deletion notice terminates a contract here.
//! The platform is restarted on its database with a WeChat Pay configuration, at the HTTP
//! address WeChat Pay's notices are sent to.
use crate::{scenario, support};

use autodebit_mock_wechatpay::{MERCHANT_SERIAL, PLATFORM_KEY_ID};
use autodebit_proto::contracts::v1::plans_service_client::PlansServiceClient;
use autodebit_proto::contracts::v1::{
    ContractState, CreatePlanRequest, CreateSigningSessionRequest, GetContractRequest, GetSigningSessionRequest,
    SigningState, TerminateContractRequest, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{SigningChannel, TerminationMode};
use autodebit_provider::wechatpay::v2::{self, Params, SignType};
use scenario::{Merchant, authed, create_plan, onboard};
use support::{MockWechatpay, TestApp, eventually, http_get, http_post_with};
use tonic::transport::Channel;

const MCH_ID: &str = "10000100";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn session_request(plan_id: &str, payer: &str) -> CreateSigningSessionRequest {
    CreateSigningSessionRequest {
        plan_id: plan_id.into(),
        payer_id: payer.into(),
        channel: SigningChannel::MiniProgram as i32,
        device_id: format!("device-{payer}"),
        client_ip: "203.0.113.9".into(),
        return_url: "https://merchant.example/done".into(),
        language: String::new(),
        merchant_contract_code: String::new(),
        idempotency_key: String::new(),
        payer_phone: String::new(),
    }
}

/// Opens a session and signs at the mock; the contract it became.
async fn sign_at_wechatpay(ch: &Channel, mock: &MockWechatpay, m: &Merchant, plan_id: &str, payer: &str) -> String {
    let mut contracts = ContractsServiceClient::new(ch.clone());
    let session = contracts
        .create_signing_session(authed(session_request(plan_id, payer), &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let url = session.provider_signing_url.clone();
    let prefix = format!("http://{}/papay/entrustweb?", mock.1);
    assert!(url.starts_with(&prefix), "{url}");
    // The payer opens it; the mock signs and sends its notice to the contracts service.
    let (status, body) = http_get(mock.1, &url[format!("http://{}", mock.1).len()..]).await;
    assert_eq!(status, 200, "{body}");
    let confirmed = eventually("the session confirmed by WeChat Pay's notice", 30, || {
        let mut c = contracts.clone();
        let req = authed(GetSigningSessionRequest { session_id: session.session_id.clone() }, &m.api_key);
        async move {
            let s = c.get_signing_session(req).await.ok()?.into_inner().session?;
            (s.state == SigningState::Confirmed as i32).then_some(s)
        }
    })
    .await;
    assert!(confirmed.provider_signing_url.is_empty(), "a confirmed session offers no entry");
    confirmed.contract_id
}

async fn contract_state(ch: &Channel, m: &Merchant, id: &str) -> i32 {
    let req = authed(GetContractRequest { contract_id: id.into(), ..Default::default() }, &m.api_key);
    let c = ContractsServiceClient::new(ch.clone()).get_contract(req).await.unwrap().into_inner();
    c.contract.unwrap().state
}

#[tokio::test]
async fn payers_sign_at_wechatpay_and_deletions_travel_both_ways() {
    let mock = MockWechatpay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let p = TestApp::spawn(&[]).await;
    let http = p.http;
    let m = onboard(&p.channel().await, "91330100MA2WXSIGN1").await;
    let config = dir.path().join("wechatpay.json");
    let account = serde_json::json!({"merchants": [{
        "merchant_id": m.merchant_id, "appid": "wxd930ea5d5a258f4f", "mch_id": MCH_ID, "api_v2_key": API_V2_KEY,
        "base_url": format!("http://{}", mock.1),
        "notify_url": format!("http://{http}/callbacks/wechatpay/v2/deduction"),
        "spbill_create_ip": "127.0.0.1", "plan_id": "12535",
        "v3": {
            "merchant_serial": MERCHANT_SERIAL,
            "merchant_private_key_file": support::mock_testdata("merchant_test_key.pem"),
            "api_v3_key": "test-apiv3-key-0123456789abcdef0",
            "platform_public_key_id": PLATFORM_KEY_ID,
            "platform_public_key_file": support::mock_testdata("platform_test_pub.pem"),
        },
    }]});
    std::fs::write(&config, account.to_string()).unwrap();
    let p = p.restart(&["--wechatpay-config", config.to_str().unwrap()]).await;
    let ch = p.channel().await;
    let plan = create_plan(&ch, &m, |t| t.provider = "wechatpay".into()).await;
    // WeChat Pay deducts CNY only: a plan in another currency is refused, naming the field.
    let mut usd = scenario::monthly_terms();
    usd.provider = "wechatpay".into();
    usd.per_charge_cap = Some(autodebit_proto::events::v1::Money { minor_units: 5_000, currency: "USD".into() });
    let req = authed(CreatePlanRequest { terms: Some(usd.clone()), idempotency_key: "usd".into() }, &m.api_key);
    let refused = PlansServiceClient::new(ch.clone()).create_plan(req).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("terms.per_charge_cap.currency: USD is not CNY"), "{}", refused.message());
    usd.provider = "simulator".into();
    let req = authed(CreatePlanRequest { terms: Some(usd), idempotency_key: "usd".into() }, &m.api_key);
    assert!(PlansServiceClient::new(ch.clone()).create_plan(req).await.is_ok(), "the simulator takes USD");

    // Signed at WeChat Pay: the session confirms, the contract is active.
    let first = sign_at_wechatpay(&ch, &mock, &m, &plan, "payer-wx-1").await;
    assert_eq!(contract_state(&ch, &m, &first).await, ContractState::Active as i32);

    // Terminated here: deleted at WeChat Pay.
    let mut contracts = ContractsServiceClient::new(ch.clone());
    let req = TerminateContractRequest {
        contract_id: first.clone(),
        mode: TerminationMode::Merchant as i32,
        remark: "closed".into(),
        ..Default::default()
    };
    contracts.terminate_contract(authed(req, &m.api_key)).await.unwrap();
    eventually("the contract deleted at WeChat Pay", 30, || async {
        let (_, body) = http_get(mock.1, "/mock/orders").await;
        let book: serde_json::Value = serde_json::from_str(&body).ok()?;
        (book["terminated_contracts"].as_u64()? == 1).then_some(())
    })
    .await;

    // Deleted at WeChat Pay (the payer ended it there): terminated here.
    let second = sign_at_wechatpay(&ch, &mock, &m, &plan, "payer-wx-2").await;
    let notice = |change: &str, contract_code: &str, key: &str| {
        let mut n = Params::new();
        for (k, v) in [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("mch_id", MCH_ID),
            ("contract_code", contract_code),
            ("plan_id", "12535"),
            ("openid", "oPayer"),
            ("change_type", change),
            ("contract_id", "201710180325670999"),
            ("contract_termination_remark", "the payer ended it in WeChat"),
        ] {
            n.insert(k.into(), v.into());
        }
        v2::sign_in_place(&mut n, key, SignType::Md5);
        v2::to_xml(&n)
    };
    let path = "/callbacks/wechatpay/v2/contract";
    let xml = [("Content-Type", "text/xml".to_string())];
    let http_addr = p.http;
    // WeChat Pay names a contract by its code: a session's code, or an imported contract's id.
    let session_code = second.clone();
    let (status, _) =
        http_post_with(http_addr, path, &xml, &notice("DELETE", &session_code, "wrong-key-0123456789abcdef012345"))
            .await;
    assert_eq!(status, 401);
    let (status, _) =
        http_post_with(http_addr, path, &xml, &notice("DELETE", "ffffffffffffffffffffffffffffffff", API_V2_KEY)).await;
    assert_eq!(status, 404);
    assert_eq!(contract_state(&ch, &m, &second).await, ContractState::Active as i32, "refused notices change nothing");
    let (status, body) = http_post_with(http_addr, path, &xml, &notice("DELETE", &session_code, API_V2_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(contract_state(&ch, &m, &second).await, ContractState::Terminated as i32);
    // Delivered again: acknowledged, nothing changes.
    let (status, _) = http_post_with(http_addr, path, &xml, &notice("DELETE", &session_code, API_V2_KEY)).await;
    assert_eq!(status, 200);
}
