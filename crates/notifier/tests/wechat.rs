//! The WeChat channel client against the fake WeChat API over HTTP on 127.0.0.1, both on the
//! platform's test clock.
use autodebit_eventstore::{EventStore, StoreOptions, testing};
use autodebit_mock_channels::wechat::{AppKind, Endpoint, PayerState, TokenStats, WechatMock, serve};
use autodebit_notifier::channels::wechat::{MessageKind, SendResult, WechatApi, WechatApp, WechatMessage};
use autodebit_runtime::{PlatformClock, Shutdown};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const OA: WechatApp<'static> = WechatApp { app_id: "wx1111111111111111", secret: "oa-secret-0123456789abcdef" };
const MP: WechatApp<'static> = WechatApp { app_id: "wx2222222222222222", secret: "mp-secret-0123456789abcdef" };
const PAYER: &str = "oPayer_0123456789abcdefghij";

struct World {
    api: WechatApi,
    base: String,
    mock: WechatMock,
    clock: PlatformClock,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The fake on 127.0.0.1:0 with an official account (template `T-paid`) and a mini program
/// (template `S-paid`), and a client pointed at it; both read the same test clock.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(StoreOptions::new(testing::sqlite_url(dir.path()))).await.unwrap();
    let shutdown = Shutdown::new();
    let clock = PlatformClock::test(&store, &shutdown).await.unwrap();
    let now = clock.clone();
    let mock = WechatMock::new(Arc::new(move || now.now_ms()));
    mock.register_app(OA.app_id, OA.secret, AppKind::OfficialAccount);
    mock.add_template(OA.app_id, "T-paid", &["amount1", "time2"]);
    mock.register_app(MP.app_id, MP.secret, AppKind::MiniProgram);
    mock.add_template(MP.app_id, "S-paid", &["amount1", "thing2"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, mock.clone()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    World { api: WechatApi::new(http, base.clone(), clock.clone()), base, mock, clock, shutdown, _dir: dir }
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn paid() -> BTreeMap<String, String> {
    fields(&[("amount1", "¥12.00"), ("time2", "2025年1月1日 10:00")])
}

fn template<'a>(touser: &'a str, fields: &'a BTreeMap<String, String>) -> WechatMessage<'a> {
    WechatMessage {
        touser,
        template_id: "T-paid",
        fields,
        link: "https://pay.example.com/c/42",
        lang: "",
        dedup_id: None,
    }
}

async fn send_template(w: &World, touser: &str) -> SendResult {
    let fields = paid();
    w.api.send(&OA, MessageKind::Template, &template(touser, &fields)).await
}

fn is_sent(result: &SendResult) -> bool {
    matches!(result, SendResult::Sent { .. })
}

#[tokio::test]
async fn the_token_is_fetched_once_and_shared_by_sends_and_concurrent_callers() {
    let w = world().await;
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let api = w.api.clone();
        sends.spawn(async move {
            let fields = paid();
            api.send(&OA, MessageKind::Template, &template(PAYER, &fields)).await
        });
    }
    let results = sends.join_all().await;
    assert!(results.iter().all(is_sent), "{results:?}");
    assert!(is_sent(&send_template(&w, PAYER).await));
    assert_eq!(w.mock.token_stats(OA.app_id), TokenStats { fetches: 1, forced_refreshes: 0 });
    assert_eq!(w.mock.messages().len(), 9);
    // The mini program has a token of its own.
    let fields = fields(&[("amount1", "¥12.00"), ("thing2", "月度会员")]);
    let msg =
        WechatMessage { touser: PAYER, template_id: "S-paid", fields: &fields, link: "", lang: "", dedup_id: None };
    assert!(is_sent(&w.api.send(&MP, MessageKind::Subscribe, &msg).await));
    assert_eq!(w.mock.token_stats(MP.app_id).fetches, 1);
    assert_eq!(w.mock.token_stats(OA.app_id).fetches, 1);
}

#[tokio::test]
async fn the_token_is_replaced_when_less_than_five_minutes_remain_by_the_platform_clock() {
    let w = world().await;
    w.mock.set_token_lifetime(3600);
    assert!(is_sent(&send_template(&w, PAYER).await));
    w.clock.advance(Duration::from_secs(3600 - 301)).await.unwrap();
    assert!(is_sent(&send_template(&w, PAYER).await));
    assert_eq!(w.mock.token_stats(OA.app_id).fetches, 1, "301 seconds left: the cached token is used");
    w.clock.advance(Duration::from_secs(2)).await.unwrap();
    assert!(is_sent(&send_template(&w, PAYER).await));
    assert_eq!(w.mock.token_stats(OA.app_id), TokenStats { fetches: 2, forced_refreshes: 0 });
    // The new token is good for its own hour: the sends past the first token's end pass.
    w.clock.advance(Duration::from_secs(1800)).await.unwrap();
    assert!(is_sent(&send_template(&w, PAYER).await));
    assert_eq!(w.mock.token_stats(OA.app_id).fetches, 2);
    assert_eq!(w.mock.send_requests(), 4, "no send was turned away for its token");
}

#[tokio::test]
async fn an_invalidated_token_is_replaced_once_and_the_send_goes_through() {
    let w = world().await;
    assert!(is_sent(&send_template(&w, PAYER).await));
    w.mock.invalidate_tokens();
    assert!(is_sent(&send_template(&w, PAYER).await));
    // Normal mode already hands out a new token: no forced refresh is spent.
    assert_eq!(w.mock.token_stats(OA.app_id), TokenStats { fetches: 2, forced_refreshes: 0 });
    assert_eq!((w.mock.send_requests(), w.mock.messages().len()), (3, 2));
    assert!(is_sent(&send_template(&w, PAYER).await));
    assert_eq!(w.mock.token_stats(OA.app_id).fetches, 2, "the new token is cached");
}

#[tokio::test]
async fn a_token_rejected_twice_ends_the_send_after_one_retry() {
    let w = world().await;
    assert!(is_sent(&send_template(&w, PAYER).await));
    w.mock.fail_sends(40001, "invalid credential, access_token is invalid or not latest", 5);
    let result = send_template(&w, PAYER).await;
    assert!(matches!(result, SendResult::Failed { retryable: false, .. }), "{result:?}");
    // Two send requests; normal mode gave back the rejected token, so one forced refresh.
    assert_eq!(w.mock.send_requests(), 3);
    assert_eq!(w.mock.token_stats(OA.app_id), TokenStats { fetches: 3, forced_refreshes: 1 });
    // Within 30 seconds of the last forced refresh WeChat hands back the same token; the send
    // still ends after its one retry.
    let result = send_template(&w, PAYER).await;
    assert!(matches!(result, SendResult::Failed { retryable: false, .. }), "{result:?}");
    assert_eq!(w.mock.send_requests(), 5);
    assert_eq!(w.mock.token_stats(OA.app_id), TokenStats { fetches: 5, forced_refreshes: 1 });
}

#[tokio::test]
async fn payers_who_cannot_receive_are_refused_so_the_caller_falls_back() {
    let w = world().await;
    w.mock.set_payer(OA.app_id, "oUnfollowed", PayerState::NotFollowing);
    w.mock.set_payer(OA.app_id, "oOtherAccount", PayerState::Unknown);
    w.mock.set_payer(MP.app_id, "oRefusing", PayerState::Refusing);
    assert!(matches!(send_template(&w, "oUnfollowed").await, SendResult::Refused { errcode: 43004, .. }));
    assert!(matches!(send_template(&w, "oOtherAccount").await, SendResult::Refused { errcode: 40003, .. }));
    let fields = fields(&[("amount1", "¥12.00"), ("thing2", "月度会员")]);
    let msg = WechatMessage {
        touser: "oRefusing",
        template_id: "S-paid",
        fields: &fields,
        link: "",
        lang: "",
        dedup_id: None,
    };
    let result = w.api.send(&MP, MessageKind::Subscribe, &msg).await;
    match result {
        SendResult::Refused { errcode: 43101, errmsg } => assert!(errmsg.starts_with("user refuse"), "{errmsg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(w.mock.messages().is_empty());
}

#[tokio::test]
async fn system_busy_is_retryable_and_other_errors_are_not() {
    let w = world().await;
    w.mock.fail_sends(-1, "system error", 1);
    let result = send_template(&w, PAYER).await;
    assert!(matches!(&result, SendResult::Failed { retryable: true, detail } if detail.contains("-1")), "{result:?}");
    assert_eq!(w.mock.send_requests(), 1, "a busy answer is not retried here");
    assert!(is_sent(&send_template(&w, PAYER).await));

    let fields = paid();
    let unknown = WechatMessage { template_id: "T-gone", ..template(PAYER, &fields) };
    let result = w.api.send(&OA, MessageKind::Template, &unknown).await;
    assert!(
        matches!(&result, SendResult::Failed { retryable: false, detail } if detail.contains("40037")),
        "{result:?}"
    );

    let wrong = WechatApp { app_id: OA.app_id, secret: "not-the-secret" };
    let api = WechatApi::new(reqwest::Client::new(), w.base.clone(), w.clock.clone());
    let result = api.send(&wrong, MessageKind::Template, &template(PAYER, &paid())).await;
    assert!(
        matches!(&result, SendResult::Failed { retryable: false, detail } if detail.contains("40125")),
        "{result:?}"
    );
}

#[tokio::test]
async fn transport_errors_are_retryable_and_name_no_token() {
    let w = world().await;
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let api = WechatApi::new(reqwest::Client::new(), base, w.clock.clone());
    let result = api.send(&OA, MessageKind::Template, &template(PAYER, &paid())).await;
    match result {
        SendResult::Failed { retryable: true, detail } => assert!(!detail.contains(OA.secret), "{detail}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    // Debug shows neither the secret nor the token.
    assert!(is_sent(&send_template(&w, PAYER).await));
    let shown = format!("{OA:?} {:?}", w.api);
    assert!(!shown.contains(OA.secret) && !shown.contains(&format!("_{}_", OA.app_id)), "{shown}");
}

#[tokio::test]
async fn both_kinds_carry_the_documented_json() {
    let w = world().await;
    let paid = paid();
    let msg = WechatMessage { dedup_id: Some("notice-42"), ..template(PAYER, &paid) };
    let result = w.api.send(&OA, MessageKind::Template, &msg).await;
    let SendResult::Sent { msgid: Some(msgid) } = result else { panic!("expected a msgid, got {result:?}") };
    let subscribe_fields = fields(&[("amount1", "¥12.00"), ("thing2", "月度会员")]);
    let msg = WechatMessage {
        touser: PAYER,
        template_id: "S-paid",
        fields: &subscribe_fields,
        link: "pages/bill/index?contract=42",
        lang: "en_US",
        dedup_id: Some("ignored"),
    };
    assert_eq!(w.api.send(&MP, MessageKind::Subscribe, &msg).await, SendResult::Sent { msgid: None });

    let received = w.mock.messages();
    assert_eq!(received.len(), 2);
    let (t, s) = (&received[0], &received[1]);
    assert_eq!((t.endpoint, t.appid.as_str(), t.msgid.to_string()), (Endpoint::Template, OA.app_id, msgid));
    assert_eq!(
        t.body,
        json!({
            "touser": PAYER,
            "template_id": "T-paid",
            "url": "https://pay.example.com/c/42",
            "client_msg_id": "notice-42",
            "data": {"amount1": {"value": "¥12.00"}, "time2": {"value": "2025年1月1日 10:00"}},
        })
    );
    assert_eq!((s.endpoint, s.appid.as_str()), (Endpoint::Subscribe, MP.app_id));
    assert_eq!(
        s.body,
        json!({
            "touser": PAYER,
            "template_id": "S-paid",
            "page": "pages/bill/index?contract=42",
            "miniprogram_state": "formal",
            "lang": "en_US",
            "data": {"amount1": {"value": "¥12.00"}, "thing2": {"value": "月度会员"}},
        })
    );
    // With no link nor lang, neither key is sent.
    let msg = WechatMessage { touser: PAYER, template_id: "T-paid", fields: &paid, link: "", lang: "", dedup_id: None };
    assert!(is_sent(&w.api.send(&OA, MessageKind::Template, &msg).await));
    let last = w.mock.messages().pop().unwrap();
    let mut keys: Vec<&String> = last.body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "template_id", "touser"]);
}
