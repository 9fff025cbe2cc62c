//! The client's configuration and its reading of WeChat Pay's codes, without a server. Its
//! round trips against the mock WeChat Pay are tested in `crates/mock-wechatpay/tests/client.rs`.
use super::*;

/// The merchant test key pair in `testdata/` (serial 5157F09E…), and a v3 account with it.
fn v3_settings() -> V3Config {
    V3Config {
        merchant_serial: "5157F09EFDC096DE15EBE81A47057A72".into(),
        merchant_private_key_pem: include_str!("testdata/merchant_test_key.pem").into(),
        api_v3_key: "0123456789abcdef0123456789abcdef".into(),
        platform_keys: vec![PlatformKey::PublicKey { id: PUBLIC_KEY_ID.into(), pem: PUBLIC_KEY_PEM.into() }],
    }
}

/// A WeChat Pay public key and its id.
const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const PUBLIC_KEY_PEM: &str = include_str!("testdata/wechatpay_go_public_key.pem");

fn config_for(base: &str) -> WeChatPayConfig {
    let mut c =
        WeChatPayConfig::new("wxd930ea5d5a258f4f", "10000100", "192006250b4c09247ec02edce69f6a2d").with_base_url(base);
    c.v3 = Some(v3_settings());
    c
}

#[test]
fn a_platform_certificate_is_read_by_its_serial() {
    let mut config = WeChatPayConfig::new("wx1", "1900000001", "k");
    config.v3 = Some(V3Config {
        platform_keys: vec![PlatformKey::Certificate { pem: include_str!("testdata/merchant_test_cert.pem").into() }],
        ..v3_settings()
    });
    // The test certificate is valid for a year from when it was made; either it reads, or it
    // is refused as expired, never as unreadable.
    match WeChatPay::new(config) {
        Ok(_) => {}
        Err(ConfigError::Invalid { problem, .. }) => assert!(problem.contains("expired"), "{problem}"),
        Err(other) => panic!("{other}"),
    }
    let mut bad = WeChatPayConfig::new("wx1", "1900000001", "k");
    bad.v3 = Some(V3Config { merchant_private_key_pem: "nope".into(), ..v3_settings() });
    assert!(matches!(WeChatPay::new(bad), Err(ConfigError::Invalid { field: "v3.merchant_private_key_pem", .. })));
}

/// Each row of `CODES`, read as WeChat Pay means it, written out here apart from the table: as
/// the `trade_state` of a query's answer or a result notice, as the `err_code` of a notice that
/// names no state, and as the `err_code` of `pappayapply`.
#[test]
fn every_documented_code_is_read_as_final_or_retryable() {
    use Verdict::*;
    let expected: &[(&str, Verdict)] = &[
        ("SUCCESS", Paid),
        ("REFUND", Paid),
        ("ACCEPT", Pending),
        ("NOTPAY", Pending),
        ("USERPAYING", Pending),
        ("PAY_FAIL", Retryable),
        ("PAYERROR", Retryable),
        ("CLOSED", Retryable),
        ("REVOKED", Retryable),
        ("NOTENOUGH", Retryable),
        ("RULELIMIT", Retryable),
        ("BANKERROR", Retryable),
        ("ACCOUNTERROR", Retryable),
        ("USER_ACCOUNT_ABNORMAL", Retryable),
        ("ORDERCLOSED", Retryable),
        ("CONTRACT_NOT_EXIST", Final),
        ("CONTRACTERROR", Final),
        ("CONTRACT_ERROR", Final),
        ("USER_NOT_EXIST", Final),
        ("TRADE_ERROR", Final),
        ("SYSTEMERROR", Pending),
        ("ORDERPAID", Pending),
        ("OUT_TRADE_NO_USED", Pending),
        ("FREQUENCY_LIMITED", Pending),
        ("ORDERNOTEXIST", NoOrder),
        ("SIGNERROR", Misconfigured),
        ("SIGN_ERROR", Misconfigured),
        ("PARAM_ERROR", Misconfigured),
        ("LACK_PARAMS", Misconfigured),
        ("INVALID_REQUEST", Misconfigured),
        ("NOAUTH", Misconfigured),
        ("NO_AUTH", Misconfigured),
        ("MCHID_NOT_EXIST", Misconfigured),
        ("APPID_NOT_EXIST", Misconfigured),
        ("APPID_MCHID_NOT_MATCH", Misconfigured),
        ("XML_FORMAT_ERROR", Misconfigured),
        ("POST_DATA_EMPTY", Misconfigured),
        ("REQUIRE_POST_METHOD", Misconfigured),
        ("NOT_UTF8", Misconfigured),
        ("TRADE_TYPE_ERROR", Misconfigured),
        ("PLAN_ID_NOT_EXIST", Misconfigured),
    ];
    let listed: Vec<&str> = CODES.iter().map(|(c, ..)| *c).collect();
    assert_eq!(listed, expected.iter().map(|(c, _)| *c).collect::<Vec<_>>(), "every row, once, in order");
    let p = |pairs: &[(&str, &str)]| -> Params { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
    for &(code, v) in expected {
        assert_eq!(verdict(code).map(|(v, _)| v), Some(v), "{code}");
        let as_state = order_state(&p(&[("trade_state", code), ("transaction_id", "4200000001")]), "query");
        let as_notice = order_state(&p(&[("result_code", "FAIL"), ("err_code", code)]), "notice");
        let applied = decline(code, "");
        match v {
            Paid => {
                assert_eq!(as_state, Lookup::Ended(ProviderOutcome::Succeeded { transaction_id: "4200000001".into() }));
                assert!(applied.is_none(), "{code}");
            }
            Pending | NoOrder => {
                assert!(
                    matches!(&as_state, Lookup::Pending { reason } if reason.contains(code)),
                    "{code}: {as_state:?}"
                );
                assert!(matches!(as_notice, Lookup::Pending { .. }), "{code}");
                assert!(applied.is_none(), "{code}");
            }
            Retryable | Final | Misconfigured => {
                let retryable = v == Retryable;
                for looked in [as_state, as_notice] {
                    let Lookup::Ended(ProviderOutcome::Declined { code: c, retryable: r, .. }) = looked else {
                        panic!("{code} did not end the order")
                    };
                    assert_eq!((c.as_str(), r), (code, retryable));
                }
                let Some(ProviderOutcome::Declined { code: c, retryable: r, message }) = applied else {
                    panic!("{code} did not decline the deduction")
                };
                assert_eq!((c.as_str(), r), (code, retryable));
                assert_eq!(message.contains("configuration"), v == Misconfigured, "{code}: {message}");
            }
        }
    }
    // An order that ended unpaid takes its cause from its err_code: a cancelled contract is final.
    let ended = order_state(&p(&[("trade_state", "PAY_FAIL"), ("err_code", "CONTRACT_NOT_EXIST")]), "query");
    assert!(
        matches!(ended, Lookup::Ended(ProviderOutcome::Declined { code, retryable: false, .. }) if code == "CONTRACT_NOT_EXIST")
    );
    let unknown = order_state(&p(&[("trade_state", "PAY_FAIL"), ("err_code", "SYSTEMERROR")]), "query");
    assert!(
        matches!(unknown, Lookup::Ended(ProviderOutcome::Declined { code, retryable: true, .. }) if code == "PAY_FAIL")
    );
    // WeChat Pay's own example of a successful result notice names no trade_state.
    let paid =
        order_state(&p(&[("result_code", "SUCCESS"), ("transaction_id", "1004400740201409030005092168")]), "notice");
    assert!(matches!(paid, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
}

/// `Wechatpay-Serial` names the key WeChat Pay answers with: the public key when one is
/// configured, whatever the order, else the first platform certificate.
#[test]
fn v3_requests_name_the_public_key_else_the_first_certificate() {
    let certificate =
        PlatformKey::Certificate { pem: include_str!("testdata/wechatpay_go_platform_certificate.pem").into() };
    let public_key = PlatformKey::PublicKey { id: PUBLIC_KEY_ID.into(), pem: PUBLIC_KEY_PEM.into() };
    for (keys, named) in [
        (vec![certificate.clone()], "F5765756002FDD77"),
        (vec![certificate.clone(), public_key.clone()], PUBLIC_KEY_ID),
        (vec![public_key, certificate], PUBLIC_KEY_ID),
    ] {
        let mut config = config_for("http://127.0.0.1:9");
        if let Some(v3c) = config.v3.as_mut() {
            v3c.platform_keys = keys;
        }
        assert_eq!(WeChatPay::new(config).unwrap().platform_serial, named);
    }
}
