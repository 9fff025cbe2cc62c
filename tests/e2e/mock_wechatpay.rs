//! `autodebit mock-wechatpay`: the real binary on port 0, spoken to over HTTP as a merchant's
//! client would, with signatures made by the provider crate.
use crate::support;

use autodebit_provider::wechatpay::v2::{self, Params, SignType};
use std::net::SocketAddr;
use support::{MockWechatpay, http_get, http_post_with};

const KEY: &str = "test-apiv2-key-0123456789abcdef0";

fn start() -> MockWechatpay {
    MockWechatpay::start(&[
        "--api-key",
        KEY,
        "--mch-id",
        "1900000109",
        "--appid",
        "wx8888888888888888",
        "--deduct-after-ms",
        "500",
    ])
}

async fn post_xml(addr: SocketAddr, path: &str, xml: &str) -> (u16, String) {
    let (status, raw) = http_post_with(addr, path, &[("Content-Type", "text/xml".into())], xml).await;
    (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn request(out_trade_no: &str) -> Params {
    [
        ("appid", "wx8888888888888888"),
        ("mch_id", "1900000109"),
        ("nonce_str", "Wm3WZYTPz0wzccnW"),
        ("body", "视频会员"),
        ("out_trade_no", out_trade_no),
        ("total_fee", "2500"),
        ("spbill_create_ip", "203.0.113.7"),
        ("notify_url", "https://merchant.example/notify"),
        ("trade_type", "PAP"),
        ("contract_id", "201710180325670965"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn query(out_trade_no: &str) -> Params {
    let mut q: Params = [
        ("appid", "wx8888888888888888"),
        ("mch_id", "1900000109"),
        ("nonce_str", "Wm3WZYTPz0wzccnX"),
        ("out_trade_no", out_trade_no),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    v2::sign_in_place(&mut q, KEY, SignType::HmacSha256);
    q
}

/// A v2 answer, verified as a client configured for HMAC-SHA256 must verify it: the answer does
/// not name its sign type, and does not verify as MD5.
fn hmac_answer(body: &str) -> Params {
    let answer = v2::from_xml(body).unwrap();
    assert!(!answer.contains_key("sign_type"), "{answer:?}");
    assert_eq!(v2::verify(&answer, KEY, SignType::HmacSha256), Ok(()));
    assert!(v2::verify(&answer, KEY, SignType::Md5).is_err());
    answer
}

#[tokio::test]
async fn accepts_then_deducts_once_per_order_number_checks_signatures_and_reports() {
    let mock = start();
    let mut p = request("chx_1");
    v2::sign_in_place(&mut p, KEY, SignType::HmacSha256);
    let (status, body) = post_xml(mock.1, "/pay/pappayapply", &v2::to_xml(&p)).await;
    assert_eq!(status, 200);
    let answer = hmac_answer(&body);
    assert_eq!(answer["result_code"], "SUCCESS", "{answer:?}");
    // Accepted, the deduction pending; then it succeeds.
    let (_, body) = post_xml(mock.1, "/pay/paporderquery", &v2::to_xml(&query("chx_1"))).await;
    assert_eq!(hmac_answer(&body)["trade_state"], "ACCEPT");
    let mut state = String::new();
    for _ in 0..100 {
        let (_, body) = post_xml(mock.1, "/pay/paporderquery", &v2::to_xml(&query("chx_1"))).await;
        state = hmac_answer(&body)["trade_state"].clone();
        if state != "ACCEPT" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, "SUCCESS");
    // The same order number again is not debited again.
    let (_, body) = post_xml(mock.1, "/pay/pappayapply", &v2::to_xml(&p)).await;
    assert_eq!(hmac_answer(&body)["err_code"], "ORDERPAID");
    // A request signed with the wrong key is refused, naming what was signed.
    let mut forged = request("chx_2");
    v2::sign_in_place(&mut forged, "wrong", SignType::Md5);
    let (_, body) = post_xml(mock.1, "/pay/pappayapply", &v2::to_xml(&forged)).await;
    let refused = v2::from_xml(&body).unwrap();
    assert_eq!(refused["return_code"], "FAIL");
    assert!(refused["return_msg"].contains("out_trade_no=chx_2"), "{refused:?}");

    let (status, body) = http_get(mock.1, "/mock/orders").await;
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["debited"], 1);
    assert_eq!(report["debited_fen"], 2500);
    assert_eq!(report["applied_more_than_once"], serde_json::json!(["chx_1"]));
    assert_eq!(report["refused_requests"], 1);
}

/// `downloadbill`, fetched by the platform's own client: the day's statement carries what the
/// mock debited (gzip on the wire, as the client asks), reads back through the statement reader,
/// and a day with nothing on it is WeChat Pay's `No Bill Exist` (20002).
#[tokio::test]
async fn serves_the_days_statement_of_what_it_debited() {
    use autodebit_domain::statement::Reader;
    use autodebit_provider::wechatpay::{WeChatPay, WeChatPayConfig};
    let mock = start();
    let mut p = request("chx_bill_1");
    v2::sign_in_place(&mut p, KEY, SignType::HmacSha256);
    let (status, _) = post_xml(mock.1, "/pay/pappayapply", &v2::to_xml(&p)).await;
    assert_eq!(status, 200);
    // Decided after 500 ms.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let config =
        WeChatPayConfig::new("wx8888888888888888", "1900000109", KEY).with_base_url(format!("http://{}", mock.1));
    let client = WeChatPay::new(config).unwrap();
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let mut text = Vec::new();
    client.downloadbill(today, &mut text).await.unwrap();
    let mut reader = Reader::new(text.as_slice(), "1900000109").unwrap();
    let line = reader.next_line().unwrap().expect("one line");
    assert_eq!((line.out_trade_no.as_str(), line.state.as_str(), line.amount), ("chx_bill_1", "SUCCESS", 2500));
    assert!(line.transaction_id.starts_with("4200"), "{line:?}");
    assert_eq!(reader.next_line().unwrap(), None, "the summary agrees");

    let long_ago = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    let err = client.downloadbill(long_ago, &mut Vec::new()).await.unwrap_err();
    assert_eq!(
        err,
        autodebit_provider::ProviderError::Refused { code: "20002".into(), message: "No Bill Exist".into() }
    );
}
