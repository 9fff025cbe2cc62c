//! Notices to payers as a payer and a merchant see them: what reaches WeChat and Tencent Cloud
//! SMS (their fakes from `autodebit-mock-channels`, on the platform's test clock), in which order
//! the channels are tried, quiet hours, delivery receipts, templates and settings, short links
//! and conversions, and the log channel of a merchant with none set up.
use crate::scenario::{self, Merchant, onboard};
use crate::support::{TestApp, element_text, eventually, http_get, http_post, path_of};
use autodebit_mock_channels::{sms::SmsFake, wechat};
use autodebit_proto::admin::v1::{AdvanceClockRequest, GetClockRequest};
use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, GetSigningSessionRequest, ResumeContractRequest, SigningSession, SigningState,
};
use autodebit_proto::events::v1::{
    self as ev, ChargeMode, Cycle, DeliveryOutcome, Event, Money, NoticeKind, SigningChannel, event::Kind,
};
use autodebit_proto::notifier::v1::{
    ListNoticeTemplatesRequest, ListNoticesRequest, Notice, SetNoticeTemplateRequest, SetNotifierSettingsRequest,
};
use autodebit_proto::scheduler::v1::{GetScheduleRequest, TriggerChargeRequest, TriggerOutcome};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tonic::Code;

const HOUR_SECS: i64 = 3_600;
const MINI: &str = "wxmini00000000001";
const OA: &str = "wxoffi00000000001";
const SMS_APP: &str = "1400000001";
const SMS_ID: &str = "AKIDnoticesTEST0001";
const PHONE: &str = "+8613800138000";

/// The platform on a test clock, with WeChat's and Tencent Cloud SMS's fakes on the same clock.
struct World {
    app: TestApp,
    wechat: wechat::WechatMock,
    sms: SmsFake,
    /// The fakes' clock: the platform's, as the test moves it.
    now: Arc<AtomicI64>,
    /// Holds the secret files the settings point at.
    secrets: tempfile::TempDir,
}

impl World {
    async fn start(extra: &[&str]) -> World {
        let now = Arc::new(AtomicI64::new(0));
        let clock: wechat::NowMs = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let wechat = wechat::WechatMock::new(clock.clone());
        wechat.register_app(MINI, "mini-secret", wechat::AppKind::MiniProgram);
        wechat.register_app(OA, "oa-secret", wechat::AppKind::OfficialAccount);
        for kind in ["signed", "pre_debit", "succeeded", "failed"] {
            wechat.add_template(MINI, &format!("SUB_{kind}"), &["thing1", "amount2"]);
            wechat.add_template(OA, &format!("TPL_{kind}"), &["keyword1", "keyword2"]);
        }
        let sms = SmsFake::new(clock);
        sms.register_account(SMS_ID, "sms-secret-key", SMS_APP);
        for id in ["2001", "2002", "2003", "2004"] {
            sms.register_template(id, 2);
        }
        sms.register_template("2009", 2);
        let wl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (wa, sa) = (wl.local_addr().unwrap(), sl.local_addr().unwrap());
        tokio::spawn(wechat::serve(wl, wechat.clone()));
        tokio::spawn(sms.clone().serve(sl));
        let (wurl, surl) = (format!("http://{wa}"), format!("http://{sa}"));
        let mut args = vec!["--test-clock", "--wechat-api-url", &wurl];
        if !extra.contains(&"--decline-basis-points") {
            args.extend(["--decline-basis-points", "0"]);
        }
        args.extend(["--tencent-sms-url", &surl]);
        args.extend(extra);
        let app = TestApp::builder().args(&args).spawn().await;
        let at = app.admin().get_clock(GetClockRequest {}).await.unwrap().into_inner().now_ms;
        now.store(at, Ordering::SeqCst);
        let secrets = tempfile::tempdir().unwrap();
        for (name, value) in
            [("mini", "mini-secret"), ("oa", "oa-secret"), ("sms-id", SMS_ID), ("sms-key", "sms-secret-key")]
        {
            std::fs::write(secrets.path().join(name), format!("{value}\n")).unwrap();
        }
        World { app, wechat, sms, now, secrets }
    }

    fn secret(&self, name: &str) -> String {
        format!("file:{}", self.secrets.path().join(name).display())
    }

    /// Moves the platform's clock (and the fakes') `seconds` on.
    async fn advance(&self, seconds: i64) {
        // The fakes move first: whatever the platform sends once it has moved is on the new time.
        self.now.fetch_add(seconds * 1000, Ordering::SeqCst);
        let at = self.app.admin().advance_clock(AdvanceClockRequest { seconds }).await.unwrap().into_inner().now_ms;
        self.now.store(at, Ordering::SeqCst);
    }

    async fn advance_to(&self, at_ms: i64) {
        let now = self.now_ms().await;
        let seconds = (at_ms - now + 999).div_euclid(1000);
        if seconds > 0 {
            self.advance(seconds).await;
        }
    }

    async fn now_ms(&self) -> i64 {
        self.app.admin().get_clock(GetClockRequest {}).await.unwrap().into_inner().now_ms
    }

    /// Every channel set up: mini program, official account and SMS, each with a template for
    /// the signing, pre-debit, succeeded and failed notices (SMS also for the code).
    fn all_channels(&self) -> ev::NotifierSettings {
        let wechat_templates = |prefix: &str, a: &str, b: &str| -> HashMap<String, ev::WechatTemplate> {
            [
                ("contract_signed", "signed", "已开通"),
                ("pre_debit", "pre_debit", "{amount}"),
                ("charge_succeeded", "succeeded", "{amount}"),
                ("charge_failed", "failed", "{amount}"),
            ]
            .into_iter()
            .map(|(kind, id, second)| {
                let fields = [(a.to_string(), "{service_name}".to_string()), (b.to_string(), second.to_string())];
                let t = ev::WechatTemplate {
                    template_id: format!("{prefix}_{id}"),
                    fields: fields.into_iter().collect(),
                    page: if prefix == "SUB" { "pages/bill/index".into() } else { String::new() },
                };
                (kind.to_string(), t)
            })
            .collect()
        };
        let sms_templates: HashMap<String, ev::SmsTemplate> = [
            ("contract_signed", "2001", "{link}"),
            ("pre_debit", "2002", "{amount}"),
            ("charge_succeeded", "2003", "{amount}"),
            ("charge_failed", "2004", "{amount}"),
        ]
        .into_iter()
        .map(|(kind, id, second)| {
            (
                kind.to_string(),
                ev::SmsTemplate { template_id: id.into(), params: vec!["{service_name}".into(), second.into()] },
            )
        })
        .chain([(
            "verification_code".to_string(),
            ev::SmsTemplate { template_id: "2009".into(), params: vec!["{code}".into(), "{minutes}".into()] },
        )])
        .collect();
        ev::NotifierSettings {
            mini_program: Some(ev::WechatChannel {
                app_id: MINI.into(),
                secret_ref: self.secret("mini"),
                templates: wechat_templates("SUB", "thing1", "amount2"),
                per_second_limit: 0,
            }),
            official_account: Some(ev::WechatChannel {
                app_id: OA.into(),
                secret_ref: self.secret("oa"),
                templates: wechat_templates("TPL", "keyword1", "keyword2"),
                per_second_limit: 0,
            }),
            sms: Some(ev::SmsChannel {
                sdk_app_id: SMS_APP.into(),
                secret_id_ref: self.secret("sms-id"),
                secret_key_ref: self.secret("sms-key"),
                sign_name: "测试会员".into(),
                templates: sms_templates,
                per_second_limit: 0,
                region: String::new(),
            }),
            ..Default::default()
        }
    }

    async fn set_settings(&self, m: &Merchant, settings: ev::NotifierSettings) {
        self.app
            .notifier_as(&m.api_key)
            .set_notifier_settings(SetNotifierSettingsRequest { settings: Some(settings) })
            .await
            .unwrap();
    }

    async fn notices(&self, contract: &str) -> Vec<Notice> {
        let req = ListNoticesRequest { contract_id: contract.into() };
        self.app.notifier().list_notices(req).await.unwrap().into_inner().notices
    }

    /// The contract's notice of `kind` once `done` holds for it.
    async fn notice_when(
        &self,
        contract: &str,
        kind: NoticeKind,
        what: &str,
        done: impl Fn(&Notice) -> bool,
    ) -> Notice {
        eventually(what, 30, || async {
            self.notices(contract).await.into_iter().find(|n| n.kind == kind as i32 && done(n))
        })
        .await
    }

    /// The contract's notice of `kind` once it has gone out (or failed).
    async fn settled_notice(&self, contract: &str, kind: NoticeKind) -> Notice {
        self.notice_when(contract, kind, &format!("the {kind:?} notice to settle"), |n| n.state != "pending").await
    }

    /// A signing session of `payer` (from `ip`, with `phone` and `language`) opened with the
    /// merchant's key.
    async fn open_session(&self, m: &Merchant, payer: &str, ip: &str, phone: &str, language: &str) -> SigningSession {
        let req = CreateSigningSessionRequest {
            plan_id: m.plan_id.clone(),
            payer_id: payer.into(),
            channel: SigningChannel::H5 as i32,
            device_id: format!("device-{payer}"),
            client_ip: ip.into(),
            return_url: "https://merchant.example/done".into(),
            language: language.into(),
            merchant_contract_code: String::new(),
            idempotency_key: String::new(),
            payer_phone: phone.into(),
        };
        let s = self.app.contracts_as(&m.api_key).create_signing_session(req).await.unwrap();
        s.into_inner().session.unwrap()
    }

    /// Ticks and confirms on the session's page (with the SMS code first, when given); returns
    /// the contract signed.
    async fn sign_on_page(&self, m: &Merchant, s: &SigningSession, sms: Option<&str>) -> String {
        let page = path_of(&s.authorization_url);
        let (_, html) = http_get(self.app.http, &page).await;
        let code = element_text(&html, "code-hint").expect("the simulator's confirmation code");
        if let Some(sms) = sms {
            http_post(self.app.http, &format!("{page}/sms"), &format!("code={sms}")).await;
        }
        http_post(self.app.http, &format!("{page}/tick"), "agree=yes").await;
        http_post(self.app.http, &format!("{page}/confirm"), &format!("code={code}")).await;
        let req = GetSigningSessionRequest { session_id: s.session_id.clone() };
        let done =
            self.app.contracts_as(&m.api_key).get_signing_session(req).await.unwrap().into_inner().session.unwrap();
        assert_eq!(done.state, SigningState::Confirmed as i32, "{done:?}");
        done.contract_id
    }

    /// A contract of `payer` signed through a session from the payer's usual region.
    async fn sign_with_session(&self, m: &Merchant, payer: &str, phone: &str, language: &str) -> String {
        let s = self.open_session(m, payer, "192.0.2.10", phone, language).await;
        assert!(!s.sms_verification_required);
        self.sign_on_page(m, &s, None).await
    }

    /// Every event of `event_type` on the log, oldest first.
    async fn events(&self, event_type: &str) -> Vec<Kind> {
        use sqlx::Connection;
        let sql = format!("SELECT payload FROM events WHERE event_type = '{event_type}' ORDER BY position");
        let mut db = sqlx::SqliteConnection::connect(self.app.database()).await.expect("open the SQLite log");
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(&sql).fetch_all(&mut db).await.expect("read the log");
        rows.into_iter().map(|(p,)| Event::decode(p.as_slice()).unwrap().kind.unwrap()).collect()
    }
}

/// The notice's deliveries on the merchant's channels (the provider's own pre-debit notice,
/// recorded as a delivery on the `simulator` channel, left out).
fn outcomes(n: &Notice) -> Vec<(String, i32)> {
    n.deliveries.iter().filter(|d| d.channel != "simulator").map(|d| (d.channel.clone(), d.outcome)).collect()
}

fn sent(channel: &str) -> (String, i32) {
    (channel.to_string(), DeliveryOutcome::Sent as i32)
}

fn refused(channel: &str) -> (String, i32) {
    (channel.to_string(), DeliveryOutcome::Refused as i32)
}

#[tokio::test]
async fn a_signed_contract_and_its_charge_reach_the_payer_as_subscribe_messages() {
    let w = World::start(&[]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0001").await;
    w.set_settings(&m, w.all_channels()).await;

    let id = scenario::sign_on(&ch, &m, &m.plan_id, "payer-mini", 2_500, Cycle::Monthly).await;
    let signed = w.settled_notice(&id, NoticeKind::ContractSigned).await;
    assert_eq!(signed.state, "sent", "{signed:?}");
    assert_eq!(signed.channel, "mini_program");
    assert_eq!(outcomes(&signed), vec![sent("mini_program")]);
    assert_eq!(signed.recipient, "payer-mini");
    assert_eq!(signed.language, "zh-CN");
    assert!(signed.text.contains("视频会员") && signed.text.contains("自动扣费"), "{}", signed.text);
    assert!(signed.text.contains(&signed.link) && !signed.link.is_empty(), "{}", signed.text);

    let got = w.wechat.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    let msg = &got[0];
    assert_eq!(
        (msg.appid.as_str(), msg.endpoint, msg.touser.as_str()),
        (MINI, wechat::Endpoint::Subscribe, "payer-mini")
    );
    assert_eq!(msg.template_id, "SUB_signed");
    assert_eq!(msg.fields.get("thing1").map(String::as_str), Some("「视频会员」"));
    assert_eq!(msg.fields.get("amount2").map(String::as_str), Some("已开通"));
    assert_eq!(msg.page.as_deref(), Some("pages/bill/index"));
    assert_eq!(msg.lang.as_deref(), Some("zh_CN"));

    // A month on: the pre-debit notice and the charge, amounts in yuan with the sign.
    scenario::bill_next_period(&ch, &id).await;
    w.now.store(w.now_ms().await, Ordering::SeqCst);
    let charged = w.settled_notice(&id, NoticeKind::ChargeSucceeded).await;
    assert_eq!((charged.state.as_str(), charged.channel.as_str()), ("sent", "mini_program"), "{charged:?}");
    assert!(charged.text.contains("¥25.00") && charged.text.contains("视频会员"), "{}", charged.text);
    let ahead = w.settled_notice(&id, NoticeKind::PreDebit).await;
    assert!(ahead.text.starts_with("扣款提醒") && ahead.text.contains("¥25.00"), "{}", ahead.text);
    // The provider's own pre-debit notice (the charger sends it) is a delivery of the same notice.
    let provider = w
        .notice_when(&id, NoticeKind::PreDebit, "the provider's notice", |n| {
            n.deliveries.iter().any(|d| d.channel == "simulator")
        })
        .await;
    let told = provider.deliveries.iter().find(|d| d.channel == "simulator").unwrap();
    assert_eq!(told.outcome, DeliveryOutcome::Sent as i32, "{provider:?}");
    assert!(provider.deliveries.iter().any(|d| d.channel == "mini_program"), "{provider:?}");
    let by_template: HashMap<String, String> =
        w.wechat.messages().into_iter().map(|m| (m.template_id.clone(), m.fields["amount2"].clone())).collect();
    assert_eq!(by_template.get("SUB_succeeded").map(String::as_str), Some("¥25.00"));
    assert_eq!(by_template.get("SUB_pre_debit").map(String::as_str), Some("¥25.00"));
}

#[tokio::test]
async fn a_payer_who_refuses_wechat_gets_a_template_message_then_an_sms() {
    let w = World::start(&[]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0002").await;
    w.set_settings(&m, w.all_channels()).await;

    // Refused the mini program's subscription: the official account's template message.
    w.wechat.set_payer(MINI, "payer-follows", wechat::PayerState::Refusing);
    let id = w.sign_with_session(&m, "payer-follows", PHONE, "").await;
    let n = w.settled_notice(&id, NoticeKind::ContractSigned).await;
    assert_eq!(n.state, "sent", "{n:?}");
    assert_eq!(outcomes(&n), vec![refused("mini_program"), sent("official_account")]);
    assert!(n.deliveries[0].detail.starts_with("43101"), "{:?}", n.deliveries);
    let got = w.wechat.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].endpoint, got[0].appid.as_str(), got[0].template_id.as_str()),
        (wechat::Endpoint::Template, OA, "TPL_signed")
    );
    assert_eq!(got[0].url.as_deref(), Some(n.link.as_str()), "the template message links to the notice");

    // Refusing both: an SMS to the phone the session gave, signed as Tencent checks.
    w.wechat.set_payer(MINI, "payer-phone", wechat::PayerState::Refusing);
    w.wechat.set_payer(OA, "payer-phone", wechat::PayerState::NotFollowing);
    let id = w.sign_with_session(&m, "payer-phone", "+8613900139000", "").await;
    let n = w.settled_notice(&id, NoticeKind::ContractSigned).await;
    assert_eq!(n.state, "sent", "{n:?}");
    assert_eq!(outcomes(&n), vec![refused("mini_program"), refused("official_account"), sent("sms")]);
    assert!(n.deliveries[1].detail.starts_with("43004"), "{:?}", n.deliveries);
    let texts = w.sms.messages();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let t = &texts[0];
    assert_eq!((t.phone.as_str(), t.sdk_app_id.as_str(), t.template_id.as_str()), ("+8613900139000", SMS_APP, "2001"));
    assert_eq!(t.params, vec!["「视频会员」".to_string(), n.link.clone()]);
    assert_eq!(t.sign_name, "测试会员");
    assert_eq!(n.deliveries[2].provider_message_id, t.serial_no);
    assert_eq!(w.wechat.messages().len(), 1, "nothing more reached WeChat");
}

#[tokio::test]
async fn an_invalidated_or_expired_token_is_fetched_again_once() {
    let w = World::start(&[]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0003").await;
    w.set_settings(&m, w.all_channels()).await;

    let first = scenario::sign_on(&ch, &m, &m.plan_id, "payer-one", 1_000, Cycle::Monthly).await;
    assert_eq!(w.settled_notice(&first, NoticeKind::ContractSigned).await.state, "sent");
    assert_eq!(w.wechat.token_stats(MINI).fetches, 1);

    // WeChat drops every token: the next notice still goes, after exactly one new fetch.
    w.wechat.invalidate_tokens();
    let second = scenario::sign_on(&ch, &m, &m.plan_id, "payer-two", 1_000, Cycle::Monthly).await;
    let n = w.settled_notice(&second, NoticeKind::ContractSigned).await;
    assert_eq!((n.state.as_str(), outcomes(&n)), ("sent", vec![sent("mini_program")]), "{n:?}");
    assert_eq!(w.wechat.token_stats(MINI).fetches, 2);

    // The token's two hours run out on the clock: one fetch again, and no forced refresh.
    w.advance(2 * HOUR_SECS).await;
    let third = scenario::sign_on(&ch, &m, &m.plan_id, "payer-three", 1_000, Cycle::Monthly).await;
    let n = w.settled_notice(&third, NoticeKind::ContractSigned).await;
    assert_eq!((n.state.as_str(), outcomes(&n)), ("sent", vec![sent("mini_program")]), "{n:?}");
    assert_eq!(w.wechat.token_stats(MINI), wechat::TokenStats { fetches: 3, forced_refreshes: 0 });
    assert_eq!(w.wechat.messages().len(), 3);
}

#[tokio::test]
async fn quiet_hours_hold_charge_notices_but_not_codes() {
    let w = World::start(&["--charge-window", "00:00-24:00"]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0004").await;
    // The official account and SMS only: both keep quiet hours.
    let mut settings = w.all_channels();
    settings.mini_program = None;
    w.set_settings(&m, settings).await;

    // The payer's first contract, at 10:00 Beijing time, from their usual region.
    let first = w.sign_with_session(&m, "payer-night", PHONE, "").await;
    assert_eq!(w.settled_notice(&first, NoticeKind::ContractSigned).await.state, "sent");

    // 23:00: a session from elsewhere needs an SMS code; it goes at once (the payer asked).
    w.advance(13 * HOUR_SECS).await;
    let night = w.now_ms().await;
    let s = w.open_session(&m, "payer-night", "198.51.100.7", PHONE, "").await;
    assert!(s.sms_verification_required);
    let code = eventually("the SMS code", 30, || async {
        w.sms.messages().into_iter().find(|t| t.template_id == "2009").map(|t| t.params[0].clone())
    })
    .await;
    assert_eq!(code.len(), 6);
    let second = w.sign_on_page(&m, &s, Some(&code)).await;
    // Its signing notice answers the payer too: not held.
    let signed = w.settled_notice(&second, NoticeKind::ContractSigned).await;
    assert_eq!(signed.state, "sent", "{signed:?}");
    assert!(signed.deliveries.iter().all(|d| d.at_ms < night + HOUR_SECS * 1000), "{signed:?}");

    // A month on, 23:00 again, the pre-debit notice of the second contract: held until 07:00.
    let schedule = w.app.scheduler().get_schedule(GetScheduleRequest { contract_id: second.clone() }).await.unwrap();
    let due = schedule.into_inner().schedule.unwrap().next_due_at_ms;
    w.advance_to(due - 24 * HOUR_SECS * 1000).await;
    let held = w.notice_when(&second, NoticeKind::PreDebit, "the pre-debit notice", |_| true).await;
    let held_at = w.now_ms().await;
    let local_hour = (held_at / 1000 / 3600 + 8).rem_euclid(24);
    assert_eq!(local_hour, 23, "the notice falls due at 23:00 Beijing time");
    w.app.caught_up().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let still = w.notices(&second).await.into_iter().find(|n| n.notice_id == held.notice_id).unwrap();
    // The provider's own notice (WeChat Pay's, here the simulator's) is not the merchant's channel.
    let ours = still.deliveries.iter().filter(|d| d.channel != "simulator").count();
    assert_eq!((still.state.as_str(), ours), ("pending", 0), "{still:?}");
    let templates_before = w.wechat.messages().iter().filter(|m| m.template_id == "TPL_pre_debit").count();
    assert_eq!(templates_before, 0);

    // 06:59: still held. 07:00: out.
    w.advance(7 * HOUR_SECS + 59 * 60).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let still = w.notices(&second).await.into_iter().find(|n| n.notice_id == held.notice_id).unwrap();
    assert_eq!(still.state, "pending", "{still:?}");
    w.advance(60).await;
    let out = w.settled_notice(&second, NoticeKind::PreDebit).await;
    assert_eq!((out.state.as_str(), outcomes(&out)), ("sent", vec![sent("official_account")]), "{out:?}");
    let on_template = out.deliveries.iter().find(|d| d.channel == "official_account").unwrap();
    assert_eq!(on_template.at_ms, held_at + 8 * HOUR_SECS * 1000, "sent at 07:00");
}

// Tencent's report (posted by the fake as soon as it accepts the message) can reach
// `/callbacks/tencent-sms` before the sender has recorded the send's serial number: it is kept
// and applied when the send is recorded.
#[tokio::test]
async fn an_sms_delivery_report_marks_the_notice_delivered() {
    let w = World::start(&[]).await;
    w.sms.set_callback_url(&format!("http://{}/callbacks/tencent-sms", w.app.http));
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0005").await;
    let mut settings = w.all_channels();
    settings.fallback_order = vec!["sms".into()];
    w.set_settings(&m, settings).await;

    let id = w.sign_with_session(&m, "payer-receipt", PHONE, "").await;
    let n = w.notice_when(&id, NoticeKind::ContractSigned, "the delivery report", |n| n.state == "delivered").await;
    assert_eq!(outcomes(&n), vec![sent("sms"), ("sms".to_string(), DeliveryOutcome::Delivered as i32)], "{n:?}");
    assert_eq!(n.deliveries[0].provider_message_id, n.deliveries[1].provider_message_id);
    let callbacks = w.sms.callbacks();
    assert_eq!(callbacks.len(), 1);
    assert!(callbacks[0].acknowledged && callbacks[0].status == Some(200), "{callbacks:?}");
}

#[tokio::test]
async fn templates_and_settings_are_checked_and_used() {
    let w = World::start(&[]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0006").await;
    let mut notifier = w.app.notifier_as(&m.api_key);

    let bad = SetNoticeTemplateRequest {
        kind: NoticeKind::ContractSigned as i32,
        language: "zh-CN".into(),
        body: "已开通{service_name}，门店：{shop}".into(),
    };
    let err = notifier.set_notice_template(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("body") && err.message().contains("{shop}"), "{}", err.message());

    let body = "已为您开通{service_name}自动续费。{link}";
    let good =
        SetNoticeTemplateRequest { kind: NoticeKind::ContractSigned as i32, language: "zh".into(), body: body.into() };
    let set = notifier.set_notice_template(good).await.unwrap().into_inner().template.unwrap();
    assert!(set.overridden && set.body == body && set.language == "zh-CN", "{set:?}");
    let listed = notifier.list_notice_templates(ListNoticeTemplatesRequest {}).await.unwrap().into_inner().templates;
    let find =
        |lang: &str| listed.iter().find(|t| t.kind == NoticeKind::ContractSigned as i32 && t.language == lang).unwrap();
    assert!(find("zh-CN").overridden && find("zh-CN").body == body);
    assert!(!find("en").overridden && find("en").body.starts_with("You signed up"));
    assert!(listed.iter().filter(|t| t.overridden).count() == 1);

    let zh = w.sign_with_session(&m, "payer-zh", "", "").await;
    let n = w.settled_notice(&zh, NoticeKind::ContractSigned).await;
    assert_eq!(n.text, format!("已为您开通「视频会员」自动续费。{}", n.link));
    let en = w.sign_with_session(&m, "payer-en", "", "en").await;
    let n = w.settled_notice(&en, NoticeKind::ContractSigned).await;
    assert_eq!(n.language, "en");
    assert!(n.text.starts_with("You signed up for automatic payments for 视频会员: "), "{}", n.text);

    // A secret given as it is, not by reference, is refused and not kept.
    let mut plain = w.all_channels();
    plain.mini_program.as_mut().unwrap().secret_ref = "mini-secret".into();
    let err = notifier.set_notifier_settings(SetNotifierSettingsRequest { settings: Some(plain) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("settings.mini_program.secret_ref"), "{}", err.message());
    assert!(!err.message().contains("mini-secret"), "the secret is not echoed: {}", err.message());
    let mut unknown = w.all_channels();
    unknown.fallback_order = vec!["sms".into(), "email".into()];
    let err = notifier.set_notifier_settings(SetNotifierSettingsRequest { settings: Some(unknown) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("settings.fallback_order[1]") && err.message().contains("email"),
        "{}",
        err.message()
    );
    let kept =
        notifier.get_notifier_settings(autodebit_proto::notifier::v1::GetNotifierSettingsRequest {}).await.unwrap();
    assert_eq!(kept.into_inner().settings.unwrap_or_default(), ev::NotifierSettings::default());
}

#[tokio::test]
async fn a_link_opened_and_a_failed_charge_paid_later_are_tracked() {
    // Every decline hard; about half the charges declined.
    let w = World::start(&[
        "--charge-window",
        "00:00-24:00",
        "--decline-basis-points",
        "5000",
        "--hard-decline-basis-points",
        "10000",
    ])
    .await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0007").await;

    let id = scenario::sign_on(&ch, &m, &m.plan_id, "payer-link", 1_000, Cycle::Monthly).await;
    let n = w.settled_notice(&id, NoticeKind::ContractSigned).await;
    assert_eq!(n.opened_at_ms, 0);
    let (status, html) = http_get(w.app.http, &path_of(&n.link)).await;
    assert_eq!(status, 200);
    assert_eq!(element_text(&html, "notice").as_deref(), Some(n.text.as_str()));
    let opened = w.notices(&id).await.into_iter().find(|x| x.notice_id == n.notice_id).unwrap().opened_at_ms;
    assert_eq!(opened, w.now_ms().await);
    w.advance(60).await;
    let (status, _) = http_get(w.app.http, &path_of(&n.link)).await;
    assert_eq!(status, 200);
    let again = w.notices(&id).await.into_iter().find(|x| x.notice_id == n.notice_id).unwrap().opened_at_ms;
    assert_eq!(again, opened, "the first visit counts");
    let events: Vec<_> = w
        .events("NoticeOpened")
        .await
        .into_iter()
        .filter_map(|k| match k {
            Kind::NoticeOpened(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].notice_id.as_str(), events[0].at_ms), (n.notice_id.as_str(), opened));
    let (status, _) = http_get(w.app.http, "/n/not-a-token").await;
    assert_eq!(status, 404);

    // A ride-by-ride contract: charges until one fails, then until one succeeds.
    let rides = scenario::create_plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let id = scenario::sign_on(&ch, &m, &rides, "payer-rides", 1_000, Cycle::Daily).await;
    eventually("the schedule", 30, || async {
        w.app.scheduler().get_schedule(GetScheduleRequest { contract_id: id.clone() }).await.ok()
    })
    .await;
    let mut failed: Option<Notice> = None;
    let mut paid_at = 0;
    for i in 0..40 {
        let req = TriggerChargeRequest {
            contract_id: id.clone(),
            amount: Some(Money { minor_units: 300, currency: "CNY".into() }),
            reason: "骑行结束".into(),
            idempotency_key: format!("ride-{i}"),
        };
        let answer = w.app.scheduler_as(&m.api_key).trigger_charge(req).await.unwrap().into_inner();
        if answer.rule == "contract_state" {
            // Three declines in a row suspended the contract: the merchant resumes it.
            let resume = ResumeContractRequest { contract_id: id.clone(), expected_version: None };
            w.app.contracts_as(&m.api_key).resume_contract(resume).await.unwrap();
            w.app.caught_up().await;
            continue;
        }
        assert_eq!(answer.outcome, TriggerOutcome::Scheduled as i32, "{answer:?}");
        let charge = answer.charge_id.clone();
        let n = eventually("the charge's notice", 30, || async {
            w.notices(&id).await.into_iter().find(|n| {
                n.charge_id == charge
                    && (n.kind == NoticeKind::ChargeFailed as i32 || n.kind == NoticeKind::ChargeSucceeded as i32)
            })
        })
        .await;
        // The last failure before a success is the notice the success converts.
        if n.kind == NoticeKind::ChargeFailed as i32 {
            failed = Some(n);
        } else if n.kind == NoticeKind::ChargeSucceeded as i32 && failed.is_some() {
            paid_at = w.now_ms().await;
            break;
        }
        // Three hours on: at most eight rides a day, under the daily limit of ten.
        w.advance(3 * HOUR_SECS).await;
    }
    let failed = failed.expect("a declined charge in 40");
    assert!(paid_at > 0, "a charge succeeded after the decline");
    assert!(failed.text.contains("未成功") && failed.text.contains("¥3.00"), "{}", failed.text);
    let converted = w
        .notice_when(&id, NoticeKind::ChargeFailed, "the conversion", |n| {
            n.notice_id == failed.notice_id && n.converted_at_ms > 0
        })
        .await;
    assert!(converted.converted_at_ms <= paid_at && converted.converted_at_ms > failed.recorded_at_ms);
    let conversions: Vec<_> = w
        .events("NoticeConverted")
        .await
        .into_iter()
        .filter_map(|k| match k {
            // A resumption (after three declines in a row) converts the suspension's notice.
            Kind::NoticeConverted(c) if c.conversion != "resumed" => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(conversions.len(), 1, "{conversions:?}");
    let c = &conversions[0];
    assert_eq!(
        (c.notice_id.as_str(), c.conversion.as_str(), c.cause.as_str()),
        (failed.notice_id.as_str(), "paid", "ChargeSucceeded")
    );
    assert_eq!(c.at_ms, converted.converted_at_ms);
}

#[tokio::test]
async fn a_merchant_without_channels_has_notices_logged() {
    let w = World::start(&[]).await;
    let ch = w.app.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0008").await;
    let id = w.sign_with_session(&m, "payer-log", PHONE, "").await;
    let n = w.settled_notice(&id, NoticeKind::ContractSigned).await;
    assert_eq!((n.state.as_str(), n.channel.as_str()), ("sent", "log"), "{n:?}");
    assert_eq!(outcomes(&n), vec![sent("log")]);
    assert!(n.text.contains("视频会员"), "{}", n.text);
    assert!(w.wechat.messages().is_empty() && w.sms.messages().is_empty());
    assert_eq!(w.wechat.send_requests(), 0);
}
