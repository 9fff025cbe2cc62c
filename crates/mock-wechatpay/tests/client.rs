//! The WeChat Pay client of `autodebit-provider` against the mock, in process: a real HTTP
//! round trip on 127.0.0.1.
use autodebit_domain::{ChargeId, ContractId, MerchantId, Money};
use autodebit_mock_wechatpay::{self as mock, MockConfig, MockOptions};
use autodebit_provider::wechatpay::client::{
    ACCEPTED, CALLBACK_ACK, ConfigError, ContractRef, ContractState, PlatformKey, V3Config, read_callback,
};
use autodebit_provider::wechatpay::v2::{self, Params, SignType};
use autodebit_provider::wechatpay::{WeChatPay, WeChatPayConfig};
use autodebit_provider::{
    ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome, RefundRequest,
    SigningChannel, SigningRequest, Termination,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn start(config: MockConfig, options: MockOptions) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = mock::serve_with(listener, config, options).await;
    });
    format!("http://{addr}")
}

fn v3_settings() -> V3Config {
    V3Config {
        merchant_serial: mock::MERCHANT_SERIAL.into(),
        merchant_private_key_pem: mock::MERCHANT_PRIVATE_KEY_PEM.into(),
        api_v3_key: "0123456789abcdef0123456789abcdef".into(),
        platform_keys: vec![PlatformKey::PublicKey {
            id: mock::PLATFORM_KEY_ID.into(),
            pem: mock::PLATFORM_PUBLIC_KEY_PEM.into(),
        }],
    }
}

fn config_for(base: &str, m: &MockConfig) -> WeChatPayConfig {
    let mut c = WeChatPayConfig::new(m.appid.clone(), m.mch_id.clone(), m.api_key.clone()).with_base_url(base);
    c.notify_url = "http://127.0.0.1:9/nowhere".into();
    c.spbill_create_ip = "203.0.113.9".into();
    c.plan_id = "12535".into();
    c.timeout = Duration::from_secs(5);
    c.v3 = Some(v3_settings());
    c
}

async fn setup(m: MockConfig, options: MockOptions) -> (WeChatPay, String) {
    let base = start(m.clone(), options).await;
    (WeChatPay::new(config_for(&base, &m)).unwrap(), base)
}

fn attempt(n: u32) -> ChargeAttempt {
    let contract = ContractId::generate();
    let mut a = ChargeAttempt::new(
        ChargeId::for_period(contract, 1),
        contract,
        MerchantId::parse("m1").unwrap(),
        n,
        Money::cny(1990),
    );
    a.provider_contract_id = "201710180325670965".into();
    a
}

/// Queries until the order is decided (the mock holds an accepted order `ACCEPT` a moment).
async fn settled(client: &WeChatPay, a: &ChargeAttempt) -> Lookup {
    for _ in 0..200 {
        match client.query(a).await {
            Lookup::Pending { reason } if reason.contains("ACCEPT") => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
    panic!("the order stayed ACCEPT")
}

async fn report(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/mock/orders")).await.unwrap().json().await.unwrap()
}

fn calm() -> MockConfig {
    MockConfig { notenough_basis_points: 0, systemerror_basis_points: 0, ..MockConfig::default() }
}

#[tokio::test]
async fn an_accepted_charge_is_unknown_until_the_query_says_succeeded_and_the_callback_comes() {
    // A merchant endpoint that records callbacks and acknowledges them.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                CALLBACK_ACK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let merchant = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let m = calm();
    let base =
        start(m.clone(), MockOptions { deduct_after: Duration::from_millis(500), ..MockOptions::default() }).await;
    let mut config = config_for(&base, &m);
    config.notify_url = merchant;
    let client = WeChatPay::new(config).unwrap();
    let a = attempt(1);
    assert_eq!(client.charge(&a).await, ProviderOutcome::Unknown { reason: ACCEPTED.into() });
    // Accepted, the deduction pending: the answer, signed HMAC-SHA256 without naming it, is read.
    assert!(matches!(client.query(&a).await, Lookup::Pending { reason } if reason.contains("ACCEPT")));
    let Lookup::Ended(ProviderOutcome::Succeeded { transaction_id }) = settled(&client, &a).await else {
        panic!("the query did not settle the charge")
    };
    assert!(transaction_id.starts_with("4200"));
    assert_eq!(client.query_by_transaction_id(&transaction_id).await, client.orderquery(&a.out_trade_no).await);

    let mut callback = None;
    for _ in 0..100 {
        if let Some(body) = received.lock().unwrap().first().cloned() {
            callback = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let callback = callback.expect("no deduction callback");
    assert!(read_callback(&callback, &m.api_key, SignType::Md5).is_err(), "signed as the request was");
    let callback = read_callback(&callback, &m.api_key, SignType::HmacSha256).unwrap();
    assert!(!callback.contains_key("sign_type"));
    assert_eq!(callback["out_trade_no"], a.out_trade_no);
    assert_eq!((callback["result_code"].as_str(), callback["total_fee"].as_str()), ("SUCCESS", "1990"));
    assert_eq!(callback["transaction_id"], transaction_id);
    assert!(read_callback(&callback_tampered(&callback), &m.api_key, SignType::HmacSha256).is_err());
}

fn callback_tampered(p: &Params) -> String {
    let mut p = p.clone();
    p.insert("total_fee".into(), "1".into());
    v2::to_xml(&p)
}

#[tokio::test]
async fn notenough_is_accepted_then_fails_and_is_retryable() {
    let (client, _) = setup(MockConfig { notenough_basis_points: 10_000, ..calm() }, MockOptions::default()).await;
    let a = attempt(1);
    assert_eq!(client.charge(&a).await, ProviderOutcome::Unknown { reason: ACCEPTED.into() });
    let Lookup::Ended(ProviderOutcome::Declined { code, retryable, .. }) = settled(&client, &a).await else {
        panic!("the query did not see PAY_FAIL")
    };
    assert_eq!((code.as_str(), retryable), ("NOTENOUGH", true));
}

#[tokio::test]
async fn md5_merchants_read_md5_answers() {
    let m = calm();
    let base = start(m.clone(), MockOptions::default()).await;
    let mut config = config_for(&base, &m);
    config.sign_type = SignType::Md5;
    let client = WeChatPay::new(config).unwrap();
    let a = attempt(1);
    assert_eq!(client.charge(&a).await, ProviderOutcome::Unknown { reason: ACCEPTED.into() });
    assert!(matches!(settled(&client, &a).await, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
}

#[tokio::test]
async fn systemerror_is_unknown_and_the_query_converges() {
    let (client, base) = setup(MockConfig { systemerror_basis_points: 10_000, ..calm() }, MockOptions::default()).await;
    let mut ended = std::collections::BTreeSet::new();
    for n in 1..=8 {
        let a = attempt(n);
        let ProviderOutcome::Unknown { reason } = client.charge(&a).await else {
            panic!("SYSTEMERROR was taken as an answer")
        };
        assert!(reason.contains("SYSTEMERROR"), "{reason}");
        match settled(&client, &a).await {
            Lookup::Ended(ProviderOutcome::Succeeded { .. }) => ended.insert("succeeded"),
            Lookup::Ended(ProviderOutcome::Declined { retryable: true, .. }) => ended.insert("declined"),
            other => panic!("the query did not converge: {other:?}"),
        };
    }
    assert_eq!(ended.len(), 2, "both sides of SYSTEMERROR are seen");
    assert_eq!(report(&base).await["applied_more_than_once"], serde_json::json!([]));
}

#[tokio::test]
async fn userpaying_is_pending_until_decided() {
    let options = MockOptions { userpaying_basis_points: 10_000, ..MockOptions::default() };
    let (client, _) = setup(calm(), options).await;
    let a = attempt(1);
    assert!(matches!(client.charge(&a).await, ProviderOutcome::Unknown { reason } if reason.contains("USERPAYING")));
    assert!(matches!(client.query(&a).await, Lookup::Pending { reason } if reason.contains("USERPAYING")));
    assert!(matches!(client.query(&a).await, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
}

#[tokio::test]
async fn an_attempt_never_sent_is_not_found() {
    let (client, _) = setup(calm(), MockOptions::default()).await;
    assert_eq!(client.query(&attempt(1)).await, Lookup::NotFound);
}

#[tokio::test]
async fn an_out_trade_no_sent_twice_is_debited_once() {
    let (client, base) = setup(calm(), MockOptions::default()).await;
    let a = attempt(1);
    assert!(matches!(client.charge(&a).await, ProviderOutcome::Unknown { .. }));
    assert!(matches!(settled(&client, &a).await, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
    let ProviderOutcome::Unknown { reason } = client.charge(&a).await else { panic!("a repeat was not Unknown") };
    assert!(reason.contains("ORDERPAID"), "{reason}");
    let r = report(&base).await;
    assert_eq!((r["debited"].as_u64(), r["debited_fen"].as_i64()), (Some(1), Some(1990)));
    assert_eq!(r["applied_more_than_once"], serde_json::json!([a.out_trade_no]));
    assert!(matches!(client.query(&a).await, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
}

#[tokio::test]
async fn a_missing_parameter_is_named_before_anything_is_sent() {
    let m = calm();
    let base = start(m.clone(), MockOptions::default()).await;
    let mut config = config_for(&base, &m);
    config.notify_url.clear();
    let client = WeChatPay::new(config).unwrap();
    let ProviderOutcome::Declined { code, message, retryable } = client.charge(&attempt(1)).await else {
        panic!("a charge without notify_url was not declined")
    };
    assert_eq!((code.as_str(), retryable), ("MISSING_PARAMETER", false));
    assert!(message.contains("notify_url") && message.contains("configuration"), "{message}");
    assert_eq!(report(&base).await["requests"], 0, "nothing reached WeChat Pay");

    let shown = format!("{:?}", config_for(&base, &m));
    assert!(!shown.contains(&m.api_key) && !shown.contains("PRIVATE KEY"), "{shown}");
    let mut empty = config_for(&base, &m);
    empty.mch_id.clear();
    assert_eq!(WeChatPay::new(empty).err(), Some(ConfigError::Missing("mch_id")));
}

#[tokio::test]
async fn a_wrong_key_is_a_configuration_decline() {
    let m = calm();
    let base = start(m.clone(), MockOptions::default()).await;
    let mut config = config_for(&base, &m);
    config.api_v2_key = "not-the-key".into();
    let client = WeChatPay::new(config).unwrap();
    let ProviderOutcome::Declined { message, retryable: false, .. } = client.charge(&attempt(1)).await else {
        panic!("a bad signature was not a configuration decline")
    };
    assert!(message.contains("configuration") && message.contains("SIGNERROR"), "{message}");
    // What was signed, exactly, with the key masked.
    assert!(message.contains("signed (HMAC-SHA256) over \"appid="), "{message}");
    assert!(message.contains("&out_trade_no=") && message.contains("&key=***\""), "{message}");
    assert!(!message.contains("not-the-key"), "{message}");
    assert_eq!(report(&base).await["orders"], 0);
}

#[tokio::test]
async fn a_tampered_answer_is_never_a_success() {
    let options = MockOptions { tamper_signatures: true, ..MockOptions::default() };
    let (client, base) = setup(calm(), options).await;
    let a = attempt(1);
    let ProviderOutcome::Unknown { reason } = client.charge(&a).await else { panic!("a tampered answer was trusted") };
    assert!(reason.contains("signature"), "{reason}");
    assert!(matches!(client.query(&a).await, Lookup::Pending { reason } if reason.contains("signature")));
    tokio::time::sleep(MockOptions::default().deduct_after).await;
    assert_eq!(report(&base).await["debited"], 1, "the mock did debit: only the query may say so");
    let notice = notice(1990);
    assert!(matches!(client.notify(&notice).await, Err(ProviderError::Transport(e)) if e.contains("verify")));
}

#[tokio::test]
async fn unreachable_is_unknown_and_pending() {
    let m = calm();
    let mut config = config_for("http://127.0.0.1:9", &m);
    config.timeout = Duration::from_millis(500);
    let client = WeChatPay::new(config).unwrap();
    let a = attempt(1);
    assert!(matches!(client.charge(&a).await, ProviderOutcome::Unknown { .. }));
    assert!(matches!(client.query(&a).await, Lookup::Pending { .. }));
}

fn notice(fen: i64) -> PreDebitNotice {
    PreDebitNotice {
        merchant_id: MerchantId::parse("m1").unwrap(),
        contract_id: ContractId::generate(),
        provider_contract_id: "201710180325670965".into(),
        amount: Money::cny(fen),
    }
}

#[tokio::test]
async fn the_pre_deduction_notice_round_trips_and_a_repeat_counts_as_done() {
    let (client, base) = setup(calm(), MockOptions::default()).await;
    assert_eq!(client.notify(&notice(1990)).await, Ok(()));
    assert_eq!(client.notify(&notice(1990)).await, Ok(()), "RESOURCE_ALREADY_EXISTS is done");
    let Err(ProviderError::Refused { code, .. }) = client.notify(&notice(2990)).await else {
        panic!("another amount in the same cycle was accepted")
    };
    assert_eq!(code, "INVALID_REQUEST");
    assert_eq!(client.fail_notify("201710180325670965").await, Ok(()));
    let r = report(&base).await;
    assert_eq!(r["notices"], 1);
    assert_eq!(r["v3_requests_without_serial"], 0, "every v3 request names the key it verifies with");

    // A merchant whose key the mock does not know is refused by signature.
    let mut config = config_for(&base, &calm());
    if let Some(v3c) = config.v3.as_mut() {
        v3c.merchant_serial = "0000".into();
    }
    let stranger = WeChatPay::new(config).unwrap();
    let Err(ProviderError::Refused { code, .. }) = stranger.notify(&notice(1990)).await else {
        panic!("an unknown merchant serial was accepted")
    };
    assert_eq!(code, "SIGN_ERROR");

    let mut no_v3 = config_for(&base, &calm());
    no_v3.v3 = None;
    let v2_only = WeChatPay::new(no_v3).unwrap();
    assert!(matches!(v2_only.notify(&notice(1990)).await, Err(ProviderError::Invalid(m)) if m.contains("v3")));
}

#[tokio::test]
async fn refunds_go_back_once_and_never_beyond_the_charge() {
    let (client, base) = setup(calm(), MockOptions::default()).await;
    let a = attempt(1);
    client.charge(&a).await;
    let Lookup::Ended(ProviderOutcome::Succeeded { transaction_id }) = settled(&client, &a).await else { panic!() };
    let request = |no: &str, fen: i64| RefundRequest {
        merchant_id: a.merchant_id.clone(),
        charge_id: a.charge_id,
        out_trade_no: a.out_trade_no.clone(),
        transaction_id: transaction_id.clone(),
        out_refund_no: no.into(),
        charge_amount: Money::cny(1990),
        refund_amount: Money::cny(fen),
        reason: "cancelled".into(),
    };
    let RefundOutcome::Succeeded { refund_id } = client.refund(&request("r1", 1200)).await else {
        panic!("the refund did not succeed")
    };
    assert_eq!(client.refund(&request("r1", 1200)).await, RefundOutcome::Succeeded { refund_id });
    let RefundOutcome::Failed { code, message } = client.refund(&request("r2", 1200)).await else {
        panic!("an over-refund was accepted")
    };
    assert_eq!(code, "INVALID_REQUEST", "{message}");
    assert!(
        matches!(client.refund(&request("r3", 5000)).await, RefundOutcome::Failed { code, .. } if code == "INVALID_AMOUNT")
    );
    assert_eq!(report(&base).await["refunded_fen"], 1200);
    let Lookup::Ended(ProviderOutcome::Succeeded { .. }) = client.query(&a).await else {
        panic!("a refunded order is still one that was paid")
    };
}

#[tokio::test]
async fn a_terminated_contract_declines_for_good() {
    let (client, _) = setup(calm(), MockOptions::default()).await;
    let a = attempt(1);
    client.charge(&a).await;
    let termination = Termination {
        merchant_id: a.merchant_id.clone(),
        contract_id: a.contract_id,
        provider_contract_id: a.provider_contract_id.clone(),
        remark: "the payer cancelled".into(),
    };
    assert_eq!(client.terminate(&termination).await, Ok(()));
    assert_eq!(client.terminate(&termination).await, Ok(()), "a contract already gone is terminated");
    let info = client.querycontract(&ContractRef::Id(a.provider_contract_id.clone())).await.unwrap();
    assert_eq!((info.state, info.termination_mode.as_str()), (ContractState::NotSigned, "3"));
    assert_eq!(info.termination_remark, "the payer cancelled");
    let ProviderOutcome::Declined { code, retryable, .. } = client.charge(&attempt(2)).await else {
        panic!("a charge on a terminated contract was not declined")
    };
    assert_eq!((code.as_str(), retryable), ("CONTRACT_NOT_EXIST", false));
}

fn signing(channel: SigningChannel) -> SigningRequest {
    SigningRequest {
        merchant_id: MerchantId::parse("m1").unwrap(),
        channel,
        provider_plan_id: String::new(),
        contract_code: "c-1001".into(),
        display_account: "视频会员 c-1001".into(),
        notify_url: "https://merchant.example/wxpay/sign?x=1&y=2".into(),
        return_url: String::new(),
        client_ip: "198.51.100.7".into(),
        request_serial: 42,
    }
}

#[tokio::test]
async fn signing_entries_are_signed_and_verify() {
    let m = calm();
    let (client, base) = setup(m.clone(), MockOptions::default()).await;
    let url = client.signing_url(&signing(SigningChannel::Web)).await.unwrap();
    assert!(url.starts_with(&format!("{base}/papay/entrustweb?")), "{url}");
    let parsed = reqwest::Url::parse(&url).unwrap();
    let params: Params = parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(params["notify_url"], "https://merchant.example/wxpay/sign?x=1&y=2");
    assert_eq!(params["plan_id"], "12535", "the configured template");
    assert!(!params.contains_key("sign_type"), "entrustweb is MD5 only");
    assert_eq!(v2::verify(&params, &m.api_key, SignType::Md5), Ok(()));
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success());
    let info = client
        .querycontract(&ContractRef::Code { plan_id: "12535".into(), contract_code: "c-1001".into() })
        .await
        .unwrap();
    assert_eq!((info.state, info.display_account.as_str()), (ContractState::Signed, "视频会员 c-1001"));

    let redirect = client.signing_url(&signing(SigningChannel::H5)).await.unwrap();
    assert!(redirect.contains("/mock/signed?contract_id="), "{redirect}");
    let mut no_ip = signing(SigningChannel::H5);
    no_ip.client_ip.clear();
    assert!(matches!(client.signing_url(&no_ip).await, Err(ProviderError::Invalid(m)) if m.contains("clientip")));

    let pre = client.signing_url(&signing(SigningChannel::WithPayment)).await.unwrap();
    assert!(pre.starts_with("mockpre"), "{pre}");
    let full = client.preentrustweb(&signing(SigningChannel::WithPayment)).await.unwrap();
    assert!(full.miniprogram_path.contains(&full.pre_entrustweb_id));
}

/// Profit sharing: a deduction made with `profit_sharing=Y` is shared through
/// `/v3/profitsharing/orders` (the same order number again answers the same order); WeChat
/// Pay's limits are kept: at most 30% of the order, and an order made without the flag is not
/// shared.
#[tokio::test]
async fn a_deduction_made_for_sharing_is_shared_once_within_the_ratio() {
    use autodebit_provider::{ShareOutcome, ShareRequest};
    let m = MockConfig::default();
    let base = start(m.clone(), MockOptions::default()).await;
    let sharing = WeChatPay::new(WeChatPayConfig { profit_sharing: true, ..config_for(&base, &m) }).unwrap();
    let plain = WeChatPay::new(config_for(&base, &m)).unwrap();
    assert!(sharing.shares_payments("m1") && !plain.shares_payments("m1"));

    let a = attempt(1);
    sharing.charge(&a).await;
    let Lookup::Ended(ProviderOutcome::Succeeded { transaction_id }) = settled(&sharing, &a).await else {
        panic!("the deduction did not succeed")
    };
    let request = |out_order_no: &str, amounts: &[i64]| ShareRequest {
        merchant_id: MerchantId::parse("m1").unwrap(),
        charge_id: a.charge_id,
        transaction_id: transaction_id.clone(),
        out_order_no: out_order_no.into(),
        receivers: amounts.iter().enumerate().map(|(i, fen)| (format!("19000001{i:02}"), *fen)).collect(),
    };
    // 30% of 19.90 is 5.97.
    let ShareOutcome::Failed { code, message } = sharing.share(&request("ps1", &[500, 100])).await else {
        panic!("more than 30% shared")
    };
    assert_eq!((code.as_str(), message.as_str()), ("INVALID_REQUEST", "分账金额超出最大分账比例"));
    let ShareOutcome::Finished { order_id } = sharing.share(&request("ps2", &[199, 100])).await else {
        panic!("not shared")
    };
    let again = sharing.share(&request("ps2", &[199, 100])).await;
    assert_eq!(again, ShareOutcome::Finished { order_id }, "the same order answered again");

    let b = attempt(1);
    plain.charge(&b).await;
    let Lookup::Ended(ProviderOutcome::Succeeded { transaction_id }) = settled(&plain, &b).await else {
        panic!("the deduction did not succeed")
    };
    let not_for_sharing = ShareRequest { transaction_id, out_order_no: "ps3".into(), ..request("ps3", &[100]) };
    let ShareOutcome::Failed { code, message } = plain.share(&not_for_sharing).await else {
        panic!("an order made without profit_sharing=Y was shared")
    };
    assert_eq!((code.as_str(), message.as_str()), ("INVALID_REQUEST", "非分账订单不支持分账"));
    let report: serde_json::Value = reqwest::get(format!("{base}/mock/orders")).await.unwrap().json().await.unwrap();
    assert_eq!((report["shared_fen"].as_i64(), report["profit_sharing_orders"].as_i64()), (Some(299), Some(1)));
}

/// Complaints (`complaints-v2`): a payer's complaint about a debited order is listed, read,
/// answered and completed once; the notification URL is created, then changed; WeChat Pay's
/// limits are kept before anything is sent; and the notice that reaches the URL decrypts with
/// the APIv3 key to the complaint's id.
#[tokio::test]
async fn complaints_are_listed_read_answered_and_completed_once() {
    use autodebit_provider::wechatpay::client::complaints::MAX_PAGE;
    let options = MockOptions { api_v3_key: "0123456789abcdef0123456789abcdef".into(), ..MockOptions::default() };
    let (client, base) = setup(calm(), options).await;
    let a = attempt(1);
    client.charge(&a).await;
    let Lookup::Ended(ProviderOutcome::Succeeded { transaction_id }) = settled(&client, &a).await else { panic!() };

    // A receiver for the notice, and the URL set: created, the same again left alone, changed.
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let receiver = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/complaints",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/complaints", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    client.set_complaint_notification_url("http://127.0.0.1:9/old").await.unwrap();
    client.set_complaint_notification_url(&url).await.unwrap();
    client.set_complaint_notification_url(&url).await.unwrap();
    let made: serde_json::Value = reqwest::get(format!("{base}/mock/complaints")).await.unwrap().json().await.unwrap();
    assert_eq!(made["notification_url"], url.as_str());

    let made: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/mock/complaints"))
        .json(&serde_json::json!({"out_trade_no": a.out_trade_no, "problem_type": "REFUND",
                                  "complaint_detail": "没有开通服务却扣了钱", "apply_refund_amount": 1990}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["complaint_id"].as_str().unwrap().to_string();

    // The notice: signed, its resource the complaint's id.
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (headers, body) = seen.lock().unwrap().first().cloned().expect("the complaint notice");
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (notice, resource) = client
        .open_callback(
            &h("Wechatpay-Serial"),
            &h("Wechatpay-Timestamp"),
            &h("Wechatpay-Nonce"),
            &h("Wechatpay-Signature"),
            &body,
        )
        .unwrap();
    assert_eq!(notice.event_type, "COMPLAINT.CREATE");
    let resource: serde_json::Value = serde_json::from_str(&resource).unwrap();
    assert_eq!(
        (resource["complaint_id"].as_str(), resource["action_type"].as_str()),
        (Some(id.as_str()), Some("CREATE_COMPLAINT"))
    );

    // Listed and read.
    let today = chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap()).date_naive();
    let page = client.complaints(today - chrono::Days::new(6), today, 0, MAX_PAGE).await.unwrap();
    assert_eq!((page.total_count, page.data.len()), (1, 1));
    let c = client.complaint(&id).await.unwrap();
    assert_eq!(c, page.data[0]);
    assert_eq!(
        (c.problem_type.as_str(), c.complaint_state.as_str(), c.apply_refund_amount),
        ("REFUND", "PENDING", Some(1990))
    );
    assert_eq!(c.complaint_order_info[0].out_trade_no, a.out_trade_no);
    assert_eq!(c.complaint_order_info[0].transaction_id, transaction_id);
    let earlier = client.complaints(today - chrono::Days::new(20), today - chrono::Days::new(10), 0, 10).await.unwrap();
    assert!(earlier.data.is_empty());

    // WeChat Pay's limits, before anything is sent.
    let requests = report(&base).await["requests"].as_u64().unwrap();
    for (limit, from) in [(0, 1), (51, 1), (10, 30), (10, 0)] {
        let (begin, end) =
            if from == 0 { (today, today - chrono::Days::new(1)) } else { (today - chrono::Days::new(from), today) };
        assert!(
            matches!(client.complaints(begin, end, 0, limit).await, Err(ProviderError::Invalid(_))),
            "{limit} {from}"
        );
    }
    assert!(matches!(client.respond_to_complaint(&id, &"长".repeat(201)).await, Err(ProviderError::Invalid(_))));
    assert!(matches!(client.respond_to_complaint(&id, "").await, Err(ProviderError::Invalid(_))));
    assert!(matches!(client.complaint("../orders").await, Err(ProviderError::Invalid(_))));
    assert_eq!(report(&base).await["requests"].as_u64().unwrap(), requests, "nothing was sent");

    // Answered and completed once; unknown ids are WeChat Pay's refusals.
    client.respond_to_complaint(&id, "已全额退款，抱歉给您带来不便").await.unwrap();
    assert_eq!(client.complaint(&id).await.unwrap().complaint_state, "PROCESSING");
    client.complete_complaint(&id).await.unwrap();
    assert_eq!(client.complaint(&id).await.unwrap().complaint_state, "PROCESSED");
    let again = client.complete_complaint(&id).await;
    assert!(matches!(&again, Err(ProviderError::Refused { code, .. }) if code == "INVALID_REQUEST"), "{again:?}");
    let unknown = client.complaint("200200000000000000000000001").await;
    assert!(
        matches!(&unknown, Err(ProviderError::Refused { code, .. }) if code == "RESOURCE_NOT_EXISTS"),
        "{unknown:?}"
    );
    let made: serde_json::Value = reqwest::get(format!("{base}/mock/complaints")).await.unwrap().json().await.unwrap();
    assert_eq!(made["complaints"][0]["responses"], serde_json::json!(["已全额退款，抱歉给您带来不便"]));
}
