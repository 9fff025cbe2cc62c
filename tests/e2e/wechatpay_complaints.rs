//! Complaints payers make at WeChat Pay, through the mock: the charger sets its complaint
//! notification URL, files a complaint when the notice comes (once, however often), finds one
//! whose notice never came by listing when it starts, and sends the merchant's answer back
//! as WeChat Pay's response and completion.
use crate::{scenario, support};

use autodebit_domain::ChargeId;
use autodebit_mock_wechatpay::{self as mock, MERCHANT_SERIAL, PLATFORM_KEY_ID};
use autodebit_proto::charger::v1::{
    AnswerComplaintRequest, ChargeState, Complaint, GetChargeRequest, ListComplaintsRequest,
    answer_complaint_request::Answer, charger_service_client::ChargerServiceClient,
    complaints_service_client::ComplaintsServiceClient,
};
use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
use autodebit_proto::events::v1::Money;
use autodebit_provider::wechatpay::client::{PlatformKey, V3Config};
use autodebit_provider::wechatpay::{WeChatPay, WeChatPayConfig};
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use std::net::SocketAddr;
use support::{MockWechatpay, TestApp, eventually, http_get};
use tonic::transport::Channel;

async fn mock_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A payer complains at WeChat Pay about the debited order `out_trade_no`.
async fn complain_at_wechatpay(addr: SocketAddr, out_trade_no: &str, problem_type: &str, words: &str) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/mock/complaints"))
        .json(&serde_json::json!({"out_trade_no": out_trade_no, "problem_type": problem_type,
                                  "complaint_detail": words}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["complaint_id"].as_str().expect("a complaint id").to_string()
}

async fn complaints(ch: &Channel) -> Vec<Complaint> {
    let req = authed(ListComplaintsRequest::default(), OPERATOR_KEY);
    ComplaintsServiceClient::new(ch.clone()).list_complaints(req).await.unwrap().into_inner().complaints
}

async fn filed(ch: &Channel, provider_id: &str) -> Complaint {
    eventually(&format!("WeChat Pay's complaint {provider_id} filed"), 30, || async {
        complaints(ch).await.into_iter().find(|c| c.provider_complaint_id == provider_id)
    })
    .await
}

/// Our charge of an order the mock debited (the order number carries the charge's id).
fn charge_id_of(out_trade_no: &str) -> String {
    ChargeId::from_out_trade_no(out_trade_no).expect("an order number of ours").0.to_string()
}

async fn charge_of(ch: &Channel, out_trade_no: &str) -> String {
    let charge_id = charge_id_of(out_trade_no);
    let c = ChargerServiceClient::new(ch.clone())
        .get_charge(authed(GetChargeRequest { charge_id: charge_id.clone() }, OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .charge
        .unwrap();
    assert_eq!(c.state, ChargeState::Succeeded as i32);
    charge_id
}

#[tokio::test]
async fn complaints_made_at_wechatpay_are_filed_once_and_answered_back() {
    let mock = MockWechatpay::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let p = TestApp::spawn(&["--test-clock", "--charge-window", "00:00-24:00"]).await;
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2WXC0001").await;
    let mut contracts = ContractsServiceClient::new(ch.clone());
    for i in 0..3 {
        let req = authed(sign_request(&merchant, &format!("payer-wx-{i}"), 1_990), OPERATOR_KEY);
        contracts.sign_contract(req).await.unwrap();
    }
    let config = dir.path().join("wechatpay.json");
    let account = serde_json::json!({"merchants": [{
        "merchant_id": merchant.merchant_id,
        "appid": "wxd930ea5d5a258f4f",
        "mch_id": "10000100",
        "api_v2_key": "192006250b4c09247ec02edce69f6a2d",
        "base_url": format!("http://{}", mock.1),
        "notify_url": "http://127.0.0.1:9/unused",
        "spbill_create_ip": "127.0.0.1",
        "v3": {
            "merchant_serial": MERCHANT_SERIAL,
            "merchant_private_key_file": support::mock_testdata("merchant_test_key.pem"),
            "api_v3_key": mock::API_V3_KEY,
            "platform_public_key_id": PLATFORM_KEY_ID,
            "platform_public_key_file": support::mock_testdata("platform_test_pub.pem"),
        },
    }]});
    std::fs::write(&config, account.to_string()).unwrap();
    let config = config.to_str().unwrap().to_string();
    let p = p.restart(&["--wechatpay-config", &config]).await;
    let ch = p.channel().await;

    // At start the charger points WeChat Pay's complaint notices at its callback.
    let expected_url = format!("http://{}/callbacks/wechatpay/v3/10000100", p.http);
    eventually("the complaint notification URL set", 30, || async {
        let made = mock_json(mock.1, "/mock/complaints").await;
        (made["notification_url"] == expected_url.as_str()).then_some(())
    })
    .await;
    p.advance(32).await;
    let orders = eventually("three orders debited", 60, || async {
        let book = mock_json(mock.1, "/mock/orders").await;
        let debited: Vec<String> =
            book["debited_orders"].as_array()?.iter().filter_map(|o| o.as_str().map(str::to_string)).collect();
        (debited.len() == 3).then_some(debited)
    })
    .await;
    let first_charge = eventually("the first charge recorded", 30, || async {
        let charge_id = charge_id_of(&orders[0]);
        let c = ChargerServiceClient::new(ch.clone())
            .get_charge(authed(GetChargeRequest { charge_id: charge_id.clone() }, OPERATOR_KEY))
            .await
            .ok()?
            .into_inner()
            .charge?;
        (c.state == ChargeState::Succeeded as i32).then_some(charge_id)
    })
    .await;

    // A complaint's notice: filed with WeChat Pay's id, its kind from the problem type.
    let wx_first = complain_at_wechatpay(mock.1, &orders[0], "REFUND", "没有开通服务却扣了钱").await;
    let c = filed(&ch, &wx_first).await;
    assert_eq!(
        (c.charge_id.as_str(), c.kind.as_str(), c.source.as_str(), c.description.as_str(), c.state.as_str()),
        (first_charge.as_str(), "amount_dispute", "wechatpay", "没有开通服务却扣了钱", "open")
    );
    assert_eq!(c.deadline_at_ms - c.filed_at_ms, 12 * 3_600_000);

    // The same notice again (WeChat Pay repeats until answered) files nothing more.
    let detail = WeChatPay::new(client_config(mock.1)).unwrap();
    let resource = serde_json::json!({"complaint_id": wx_first, "action_type": "CREATE_COMPLAINT"});
    let (headers, body) = mock::v3_callback("COMPLAINT.CREATE", &resource, mock::API_V3_KEY, now_secs(), "again-0001");
    let (status, answer) = support::http_post_with(p.http, "/callbacks/wechatpay/v3/10000100", &headers, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(complaints(&ch).await.len(), 1);

    // The merchant refunds: WeChat Pay hears the response, and the complaint is completed.
    let answer = AnswerComplaintRequest {
        complaint_id: c.complaint_id.clone(),
        answer: Some(Answer::Refund(Money { minor_units: 1_990, currency: "CNY".into() })),
        evidence: vec![],
    };
    ComplaintsServiceClient::new(ch.clone()).answer_complaint(authed(answer, &merchant.api_key)).await.unwrap();
    let at_wechatpay = eventually("the complaint completed at WeChat Pay", 30, || async {
        let c = detail.complaint(&wx_first).await.ok()?;
        (c.complaint_state == "PROCESSED").then_some(())
    })
    .await;
    let _ = at_wechatpay;
    let made = mock_json(mock.1, "/mock/complaints").await;
    let responses = made["complaints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["complaint_id"] == wx_first.as_str())
        .unwrap()["responses"]
        .clone();
    assert_eq!(responses, serde_json::json!(["已退款 19.90 元。"]));

    // A notice that never arrives: the complaint is found by listing when the charger starts.
    detail.set_complaint_notification_url("http://127.0.0.1:9/nowhere").await.unwrap();
    let wx_second = complain_at_wechatpay(mock.1, &orders[1], "SERVICE_NOT_WORK", "").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(complaints(&ch).await.len(), 1, "its notice went nowhere");
    let p = p.restart(&[]).await;
    let ch = p.channel().await;
    let c = filed(&ch, &wx_second).await;
    assert_eq!(
        (c.kind.as_str(), c.source.as_str(), c.charge_id),
        ("service_not_delivered", "wechatpay", charge_of(&ch, &orders[1]).await)
    );
    assert_eq!(c.description, "service_not_delivered", "no words: the kind's name");
    let expected_url = format!("http://{}/callbacks/wechatpay/v3/10000100", p.http);
    let made = mock_json(mock.1, "/mock/complaints").await;
    assert_eq!(made["notification_url"], expected_url.as_str(), "the URL set again");

    // A complaint about an order that is not ours is refused, and nothing is filed.
    let resource =
        serde_json::json!({"complaint_id": "200200000000000000000000404", "action_type": "CREATE_COMPLAINT"});
    let (headers, body) =
        mock::v3_callback("COMPLAINT.CREATE", &resource, mock::API_V3_KEY, now_secs(), "unknown-0001");
    let (status, _) = support::http_post_with(p.http, "/callbacks/wechatpay/v3/10000100", &headers, &body).await;
    assert_eq!(status, 404, "WeChat Pay does not know it either");
    assert_eq!(complaints(&ch).await.len(), 2);
}

/// The merchant's account as a client of the mock, to act as WeChat Pay's merchant platform.
fn client_config(mock: SocketAddr) -> WeChatPayConfig {
    let mut c = WeChatPayConfig::new("wxd930ea5d5a258f4f", "10000100", "192006250b4c09247ec02edce69f6a2d")
        .with_base_url(format!("http://{mock}"));
    c.v3 = Some(V3Config {
        merchant_serial: MERCHANT_SERIAL.into(),
        merchant_private_key_pem: mock::MERCHANT_PRIVATE_KEY_PEM.into(),
        api_v3_key: mock::API_V3_KEY.into(),
        platform_keys: vec![PlatformKey::PublicKey {
            id: PLATFORM_KEY_ID.into(),
            pem: mock::PLATFORM_PUBLIC_KEY_PEM.into(),
        }],
    });
    c
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
