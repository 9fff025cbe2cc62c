//! WeChat Pay's callbacks on the charger's HTTP listener, as bad input would reach them: each
//! refused with its status, counted by reason, and nothing changed; and charges through the mock
//! WeChat Pay, which answers as WeChat Pay does, reaching their outcomes.
//! The refusals test runs the real binary (`support::Process`): the refusals are counted on
//! `/metrics`, whose counters are one set per process.
use crate::{scenario, support};

use autodebit_domain::{ChargeId, ContractId};
use autodebit_mock_wechatpay::{self as mock, MERCHANT_SERIAL, PLATFORM_KEY_ID};
use autodebit_provider::wechatpay::v2::{self, Params, SignType};
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use support::{MockWechatpay, Process, TestApp, eventually, http_get, http_post_with};

const MCH_ID: &str = "1900000109";
const API_V2_KEY: &str = "test-apiv2-key-0123456789abcdef0";
const API_V3_KEY: &str = "test-apiv3-key-0123456789abcdef0";

/// The merchant's APIv3 account: its key and serial, WeChat Pay's public key.
fn v3_account() -> serde_json::Value {
    serde_json::json!({
        "merchant_serial": MERCHANT_SERIAL,
        "merchant_private_key_file": support::mock_testdata("merchant_test_key.pem"),
        "api_v3_key": API_V3_KEY,
        "platform_public_key_id": PLATFORM_KEY_ID,
        "platform_public_key_file": support::mock_testdata("platform_test_pub.pem"),
    })
}

fn platform(dir: &std::path::Path) -> Process {
    let config = dir.join("wechatpay.json");
    let account = serde_json::json!({"merchants": [{
        "merchant_id": "mch-callbacks",
        "appid": "wx8888888888888888",
        "mch_id": MCH_ID,
        "api_v2_key": API_V2_KEY,
        "base_url": "http://127.0.0.1:9",
        "notify_url": "http://127.0.0.1:9/unused",
        "spbill_create_ip": "127.0.0.1",
        "v3": v3_account(),
    }]});
    std::fs::write(&config, account.to_string()).unwrap();
    let data = dir.join("data");
    Process::start(&["run", "--data-dir", data.to_str().unwrap(), "--wechatpay-config", config.to_str().unwrap()])
}

/// A deduction result for `out_trade_no`, signed with `key`.
fn deduction(out_trade_no: &str, key: &str) -> String {
    let mut p = Params::new();
    for (k, v) in [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wx8888888888888888"),
        ("mch_id", MCH_ID),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("out_trade_no", out_trade_no),
        ("transaction_id", "4200000000000000000000000001"),
        ("trade_state", "SUCCESS"),
        ("total_fee", "1990"),
    ] {
        p.insert(k.into(), v.into());
    }
    // As WeChat Pay signs it: in the request's sign type (HMAC-SHA256 here), without naming it.
    v2::sign_answer(&mut p, key, SignType::HmacSha256);
    v2::to_xml(&p)
}

async fn post(p: &Process, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    http_post_with(p.http, path, headers, body).await.0
}

async fn counted(p: &Process, kind: &str, result: &str) -> i64 {
    let (_, metrics) = http_get(p.http, "/metrics").await;
    support::metric(&metrics, &format!("autodebit_callbacks_total{{kind=\"{kind}\",result=\"{result}\"}}"))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn bad_callbacks_are_refused_with_their_status_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = platform(dir.path());
    let v2_path = "/callbacks/wechatpay/v2/deduction";
    let xml = [("Content-Type", "text/xml".to_string())];
    let unknown_order = ChargeId::for_period(ContractId::generate(), 1).out_trade_no(1);

    // v2: malformed XML, an account not ours, a bad signature, an order not ours.
    assert_eq!(post(&p, v2_path, &xml, "<xml><a>1</a").await, 400);
    assert_eq!(post(&p, v2_path, &xml, &deduction(&unknown_order, API_V2_KEY).replace(MCH_ID, "1234")).await, 404);
    assert_eq!(post(&p, v2_path, &xml, &deduction(&unknown_order, "another-key-0123456789abcdef0123")).await, 401);
    assert_eq!(post(&p, v2_path, &xml, &deduction(&unknown_order, API_V2_KEY)).await, 404);
    assert_eq!(post(&p, v2_path, &xml, &deduction("not-an-order-number", API_V2_KEY)).await, 404);
    for (result, n) in [("malformed", 1), ("unknown_merchant", 1), ("bad_signature", 1), ("unknown_order", 2)] {
        assert_eq!(counted(&p, "deduction", result).await, n, "{result}");
    }

    // v3: a signature over other bytes, a stale timestamp, a replayed nonce, a body that is
    // not an envelope, a deduction of an order not ours.
    let v3_path = format!("/callbacks/wechatpay/v3/{MCH_ID}");
    let resource = serde_json::json!({"mchid": MCH_ID, "out_trade_no": unknown_order, "transaction_id": "42",
                                      "trade_state": "SUCCESS", "amount": {"total": 1990}});
    let (headers, body) = mock::v3_callback("TRANSACTION.SUCCESS", &resource, API_V3_KEY, now_secs(), "nonce-0001");
    assert_eq!(post(&p, &v3_path, &headers, &body.replace("TRANSACTION", "TRANSACTIOM")).await, 401);
    let (stale, stale_body) =
        mock::v3_callback("TRANSACTION.SUCCESS", &resource, API_V3_KEY, now_secs() - 301, "nonce-0002");
    assert_eq!(post(&p, &v3_path, &stale, &stale_body).await, 401);
    assert_eq!(post(&p, &v3_path, &headers, &body).await, 404, "signed, but the order is not ours");
    assert_eq!(post(&p, &v3_path, &headers, &body).await, 409, "the same nonce again");
    let garbage = "{\"id\": 7}";
    let (signed_garbage, _) = mock::v3_callback("TRANSACTION.SUCCESS", &resource, API_V3_KEY, now_secs(), "nonce-0003");
    let resigned = resign(&signed_garbage, garbage);
    assert_eq!(post(&p, &v3_path, &resigned, garbage).await, 400);
    assert_eq!(post(&p, "/callbacks/wechatpay/v3/1234", &headers, &body).await, 404);
    // A refund result for a refund not ours.
    let refund = serde_json::json!({"mchid": MCH_ID, "out_refund_no": "rf_nonsense", "refund_id": "50000",
                                    "refund_status": "SUCCESS"});
    let (rh, rb) = mock::v3_callback("REFUND.SUCCESS", &refund, API_V3_KEY, now_secs(), "nonce-0004");
    assert_eq!(post(&p, &v3_path, &rh, &rb).await, 404);
    assert_eq!(counted(&p, "v3", "unknown_refund").await, 1);
    for (result, n) in [("bad_signature", 1), ("stale_timestamp", 1), ("unknown_order", 1), ("replayed", 1)] {
        assert_eq!(counted(&p, "v3", result).await, n, "{result}");
    }
    assert_eq!(counted(&p, "v3", "malformed").await, 1);
    assert_eq!(counted(&p, "v3", "unknown_merchant").await, 1);
}

/// The same headers, signed over `body` instead (as if WeChat Pay had signed a malformed envelope).
fn resign(headers: &[(&'static str, String)], body: &str) -> Vec<(&'static str, String)> {
    let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()).unwrap();
    let ts: i64 = get("Wechatpay-Timestamp").parse().unwrap();
    let message = autodebit_provider::wechatpay::v3::response_message(ts, &get("Wechatpay-Nonce"), body);
    let signature = mock::sign_as_platform(&message);
    headers.iter().map(|(k, v)| (*k, if *k == "Wechatpay-Signature" { signature.clone() } else { v.clone() })).collect()
}

/// Charges through the mock with HMAC-SHA256 configured: WeChat Pay's answers name no sign
/// type, deductions are accepted (`ACCEPT`) and then succeed or fail (`PAY_FAIL`, NOTENOUGH);
/// settled by query alone, every charge reaches its outcome, a decline as `ChargeFailed`, and
/// the platform records exactly what the mock debited.
#[tokio::test]
async fn charges_through_wechatpay_with_hmac_sha256_reach_their_outcomes() {
    use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
    use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
    const CONTRACTS: u64 = 16;
    let mock = MockWechatpay::start(&["--notenough-basis-points", "5000"]);
    let dir = tempfile::tempdir().unwrap();

    // Onboard and sign on the simulator; then point the merchant at WeChat Pay.
    let p = TestApp::spawn(&["--test-clock", "--charge-window", "00:00-24:00"]).await;
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2HMAC001").await;
    let mut contracts = ContractsServiceClient::new(ch.clone());
    for i in 0..CONTRACTS {
        let req = authed(sign_request(&merchant, &format!("payer-{i}"), 1_990), OPERATOR_KEY);
        contracts.sign_contract(req).await.unwrap();
    }
    let config = dir.path().join("wechatpay.json");
    let account = serde_json::json!({"merchants": [{
        "merchant_id": merchant.merchant_id,
        "appid": "wxd930ea5d5a258f4f",
        "mch_id": "10000100",
        "api_v2_key": "192006250b4c09247ec02edce69f6a2d",
        "sign_type": "HMAC-SHA256",
        "base_url": format!("http://{}", mock.1),
        // No result notice arrives: only the answers to the queries can settle the charges.
        "notify_url": "http://127.0.0.1:9/unused",
        "spbill_create_ip": "127.0.0.1",
        "v3": v3_account(),
    }]});
    std::fs::write(&config, account.to_string()).unwrap();
    let p = p.restart(&["--wechatpay-config", config.to_str().unwrap()]).await;
    let ch = p.channel().await;
    p.advance(32).await;

    let summary = eventually("every charge at an outcome", 60, || {
        let mut a = AnalyticsServiceClient::new(ch.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.charges_succeeded + s.charges_failed >= CONTRACTS).then_some(s)
        }
    })
    .await;
    assert_eq!(summary.charges_succeeded + summary.charges_failed, CONTRACTS, "{summary:?}");
    assert!(summary.charges_failed > 0 && summary.charges_succeeded > 0, "{summary:?}");
    let (_, body) = http_get(mock.1, "/mock/orders").await;
    let book: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(book["orders"].as_u64(), Some(CONTRACTS), "each charge sent once: {book}");
    assert_eq!(book["debited"].as_u64(), Some(summary.charges_succeeded), "{book}");
    assert_eq!(book["refused_requests"], 0, "{book}");
    // Each call to WeChat Pay timed: a deduction per charge, and the queries that settled them
    // (at least these: the tests of this binary share one set of metrics).
    let calls = |call: &str| -> i64 {
        let prefix = format!("autodebit_provider_call_ms_count{{provider=\"wechatpay\",call=\"{call}\",outcome=\"");
        autodebit_runtime::metrics::render()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix)?.split_once("} ")?.1.trim().parse::<i64>().ok())
            .sum()
    };
    assert!(calls("charge") >= CONTRACTS as i64, "{}", autodebit_runtime::metrics::render());
    assert!(calls("query") > 0, "{}", autodebit_runtime::metrics::render());
}
