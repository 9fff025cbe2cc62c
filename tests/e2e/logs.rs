//! What the logs (and the backlog gauges) hold: a run of the real binary at the most detailed level operators use
//! (`RUST_LOG=debug`), through onboarding, a payer signing on the authorization page with a
//! phone number, contracts imported, charges at the mock WeChat Pay (some answered with errors,
//! some declined), a refund, SMS notices to a gateway that cannot be reached and webhooks to an
//! endpoint that is down, so that the error paths log too. Then the log is searched for every
//! secret the run was configured with or handed out, and for every payer id and phone number:
//! none may appear. (Payers are named in logs by a masked form, `domain::mask`.)
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, RefundChargeRequest, charger_service_client::ChargerServiceClient,
};
use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, GetSigningSessionRequest, SigningState,
    contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{self as ev, Money, SigningChannel};
use autodebit_proto::notifier::v1::{
    CreateWebhookEndpointRequest, SetNotifierSettingsRequest, notifier_service_client::NotifierServiceClient,
    webhooks_service_client::WebhooksServiceClient,
};
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use support::{MockWechatpay, Process, element_text, eventually, http_get, http_post, metric, path_of};

const PHONE: &str = "+8613912345678";
const SIGNER: &str = "payer-7f3a9c2e-signs-on-the-page";
const SMS_SECRET_ID: &str = "AKIDlogsTEST00000001";
const SMS_SECRET_KEY: &str = "sms-secret-key-never-logged-0001";
const IMPORTED: usize = 30;

fn imported_payer(i: usize) -> String {
    format!("payer-c41d{i:04}-imported")
}

/// A port nothing listens on (bound and let go).
fn dead_port() -> u16 {
    support::free_port().port()
}

/// A log line without its terminal colours.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_full_run_logs_no_secret_payer_id_or_phone_number() {
    let mock = MockWechatpay::start(&[
        "--systemerror-basis-points",
        "1500",
        "--notenough-basis-points",
        "3000",
        "--userpaying-basis-points",
        "1000",
        "--seed",
        "5",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("autodebit.log");
    let data = dir.path().join("data");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for (name, value) in [("sms-id", SMS_SECRET_ID), ("sms-key", SMS_SECRET_KEY)] {
        std::fs::write(secrets.join(name), format!("{value}\n")).unwrap();
    }
    let (sms_port, hook_port) = (dead_port(), dead_port());
    let sms_url = format!("http://127.0.0.1:{sms_port}");
    let base = [
        "run",
        "--data-dir",
        data.to_str().unwrap(),
        "--test-clock",
        "--charge-window",
        "00:00-24:00",
        "--tencent-sms-url",
        &sms_url,
        "--allow-loopback-webhooks",
    ];

    // Onboarding, notices by SMS, a webhook endpoint, a payer signing with a phone number, and
    // imported contracts, on the simulator.
    let p = Process::start_logged(&base, "debug", &log);
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2LOGS001").await;
    let secret_ref = |name: &str| format!("file:{}", secrets.join(name).display());
    let templates = ["contract_signed", "pre_debit", "charge_succeeded", "charge_failed", "verification_code"]
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            (
                kind.to_string(),
                ev::SmsTemplate { template_id: format!("300{i}"), params: vec!["{service_name}".into()] },
            )
        })
        .collect();
    let settings = ev::NotifierSettings {
        sms: Some(ev::SmsChannel {
            sdk_app_id: "1400000001".into(),
            secret_id_ref: secret_ref("sms-id"),
            secret_key_ref: secret_ref("sms-key"),
            sign_name: "测试会员".into(),
            templates,
            per_second_limit: 0,
            region: String::new(),
        }),
        ..Default::default()
    };
    NotifierServiceClient::new(ch.clone())
        .set_notifier_settings(authed(SetNotifierSettingsRequest { settings: Some(settings) }, &merchant.api_key))
        .await
        .unwrap();
    let webhook_secret = WebhooksServiceClient::new(ch.clone())
        .create_webhook_endpoint(authed(
            CreateWebhookEndpointRequest {
                url: format!("http://127.0.0.1:{hook_port}/hooks"),
                event_types: vec!["charge.succeeded".into(), "charge.failed".into(), "contract.signed".into()],
                description: "down".into(),
            },
            &merchant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(!webhook_secret.is_empty());

    let mut contracts = ContractsServiceClient::new(ch.clone());
    let session = contracts
        .create_signing_session(authed(
            CreateSigningSessionRequest {
                plan_id: merchant.plan_id.clone(),
                payer_id: SIGNER.into(),
                channel: SigningChannel::H5 as i32,
                device_id: "device-logs".into(),
                client_ip: "192.0.2.77".into(),
                return_url: "https://merchant.example/done".into(),
                language: String::new(),
                merchant_contract_code: String::new(),
                idempotency_key: String::new(),
                payer_phone: PHONE.into(),
            },
            &merchant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let page = path_of(&session.authorization_url);
    let (status, html) = http_get(p.http, &page).await;
    assert_eq!(status, 200, "{html}");
    let code = element_text(&html, "code-hint").expect("the simulator's code is shown");
    assert_eq!(http_post(p.http, &format!("{page}/tick"), "agree=yes").await.0, 303);
    assert_eq!(http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await.0, 303);
    let signed = contracts
        .get_signing_session(authed(
            GetSigningSessionRequest { session_id: session.session_id.clone() },
            &merchant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(signed.state, SigningState::Confirmed as i32, "{signed:?}");
    let mut imported = Vec::new();
    for i in 0..IMPORTED {
        let request = authed(sign_request(&merchant, &imported_payer(i), 1_990), OPERATOR_KEY);
        imported.push(contracts.sign_contract(request).await.unwrap().into_inner().contract.unwrap().contract_id);
    }
    p.caught_up().await;
    drop(p);

    // The merchant moved to WeChat Pay (the mock, answering errors now and then); a month on,
    // every contract is charged, and one succeeded charge refunded.
    let config = dir.path().join("wechatpay.json");
    mock.write_config(&config, &merchant.merchant_id, "http://127.0.0.1:9/callbacks/wechatpay/v2/deduction");
    let args = [&base[..], &["--wechatpay-config", config.to_str().unwrap()]].concat();
    let p = Process::start_logged(&args, "debug", &log);
    let ch = p.channel().await;
    AdminServiceClient::new(ch.clone())
        .advance_clock(authed(AdvanceClockRequest { seconds: 32 * 86_400 }, OPERATOR_KEY))
        .await
        .unwrap();
    let contracts_signed = (IMPORTED + 1) as u64;
    let summary = eventually("every charge at an outcome", 120, || {
        let mut a = AnalyticsServiceClient::new(ch.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.charges_succeeded + s.charges_failed >= contracts_signed).then_some(s)
        }
    })
    .await;
    assert!(summary.charges_succeeded > 0 && summary.charges_failed > 0, "both outcomes: {summary:?}");
    let mut charger = ChargerServiceClient::new(ch.clone());
    let mut succeeded = None;
    for (i, contract) in imported.iter().enumerate() {
        let request = GetChargeRequest { charge_id: scenario::charge_id(contract, 1) };
        let charge = charger.get_charge(authed(request, &merchant.api_key)).await.unwrap().into_inner().charge.unwrap();
        if charge.state == ChargeState::Succeeded as i32 {
            succeeded = Some((i, charge));
            break;
        }
    }
    let (refunded_payer, succeeded) = succeeded.expect("a succeeded charge");
    charger
        .refund_charge(authed(
            RefundChargeRequest {
                charge_id: succeeded.charge_id.clone(),
                amount: Some(Money { minor_units: 100, currency: "CNY".into() }),
                reason: "customer asked".into(),
                idempotency_key: "logs-refund-1".into(),
            },
            &merchant.api_key,
        ))
        .await
        .unwrap();
    p.caught_up().await;
    // The notices' SMS attempts (the gateway is down) and the webhooks' (so is the endpoint)
    // have been made: the connections to them are logged.
    eventually("an SMS and a webhook attempt logged", 60, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        [sms_port, hook_port].iter().all(|port| text.contains(&format!("127.0.0.1:{port}"))).then_some(())
    })
    .await;
    // The backlogs this left, counted from the tables: deliveries waiting for the webhook
    // endpoint and notices for the SMS gateway, retries of the declined charges. And the
    // outcomes, as the projections have them.
    // (Counted every 5 seconds: an attempt answered "user paying" is asked about again a little
    // later, so the count of undecided ones may take a sample or two to reach 0.)
    let metrics = eventually("the backlogs counted", 60, || async {
        let (_, m) = http_get(p.http, "/metrics").await;
        let waiting = [
            "autodebit_webhook_backlog{state=\"pending\"}",
            "autodebit_notice_backlog{state=\"pending\"}",
            "autodebit_retries_waiting",
        ];
        let idle = ["autodebit_attempts_in_flight", "autodebit_charges_on_hold"];
        (waiting.iter().all(|s| metric(&m, s) >= 1) && idle.iter().all(|s| metric(&m, s) == 0)).then_some(m)
    })
    .await;
    let summary = AnalyticsServiceClient::new(ch.clone())
        .get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        metric(&metrics, "autodebit_charge_outcomes_total{outcome=\"succeeded\"}") as u64,
        summary.charges_succeeded
    );
    assert_eq!(metric(&metrics, "autodebit_charge_outcomes_total{outcome=\"failed\"}") as u64, summary.charges_failed);

    // The refund's notice (no SMS template for it) goes to the log channel, its payer masked.
    let masked = format!("recipient=\"{}\"", autodebit_domain::mask::payer(&imported_payer(refunded_payer)));
    eventually("the refund's notice in the log, its payer masked", 60, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().any(|l| strip_ansi(l).contains(&masked) && l.contains("refund_succeeded")).then_some(())
    })
    .await;
    drop(p);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 1_000, "a detailed log: {} lines", text.lines().count());
    let pem = std::fs::read_to_string(support::mock_testdata("merchant_test_key.pem")).unwrap();
    let key_line = pem.lines().find(|l| l.len() >= 60 && !l.starts_with("-----")).expect("a line of the key");
    let api_secret = merchant.api_key.rsplit_once('_').unwrap().1.to_string();
    let mut secret_values: Vec<(&str, String)> = vec![
        ("the operator key", support::OPERATOR.into()),
        ("the merchant's API key", merchant.api_key.clone()),
        ("the merchant's API key's secret", api_secret),
        ("the webhook signing secret", webhook_secret.clone()),
        ("the APIv2 key", MockWechatpay::API_V2_KEY.into()),
        ("the APIv3 key", MockWechatpay::API_V3_KEY.into()),
        ("the merchant's private key", key_line.into()),
        ("the SMS secret id", SMS_SECRET_ID.into()),
        ("the SMS secret key", SMS_SECRET_KEY.into()),
        ("a payer's phone number", PHONE.into()),
        ("a payer's phone number without its country code", PHONE[3..].into()),
        ("the signing payer's id", SIGNER.into()),
    ];
    secret_values.extend((0..IMPORTED).map(|i| ("an imported payer's id", imported_payer(i))));
    let leaked: Vec<String> = secret_values
        .iter()
        .filter_map(|(what, value)| {
            let line = text.lines().find(|l| l.contains(value.as_str()))?;
            Some(format!("{what} in: {line}"))
        })
        .collect();
    assert!(leaked.is_empty(), "the log holds what it must not:\n{}", leaked.join("\n"));
}
