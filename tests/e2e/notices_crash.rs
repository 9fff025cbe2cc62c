//! Crash safety of the notifier's two senders: 1,000 contracts signed, each a notice to the payer
//! (an official-account template message at an in-test WeChat fake) and a `contract.signed`
//! webhook (at an in-test receiver). The platform is killed with SIGKILL while both are flowing
//! and restarted on the same data directory. Checked at the receivers: every notice and every
//! webhook arrives; the only ones that arrive twice are ones the senders had taken (`sending`)
//! when the process died, and they come again under the same id; every webhook signature
//! verifies. The platform runs as the real binary (`support::Process`): the test kills it.
use crate::{scenario, support};

use autodebit_mock_channels::wechat::{AppKind, WechatMock};
use autodebit_notifier::webhooks::sign::{Secret, verify};
use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
use autodebit_proto::events::v1::{NotifierSettings, WechatChannel, WechatTemplate};
use autodebit_proto::notifier::v1::{
    CreateWebhookEndpointRequest, SetNotifierSettingsRequest, notifier_service_client::NotifierServiceClient,
    webhooks_service_client::WebhooksServiceClient,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use futures::StreamExt;
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Process, eventually};

const CONTRACTS: usize = 1_000;
const APP_ID: &str = "wxcrash0000000001";
const TEMPLATE: &str = "TPL_CONTRACT_SIGNED";
/// What each sender can have taken at once: `worker/notices.rs` claims `BATCH` notices per pass
/// and records them together; `worker/webhooks.rs` has at most `CONCURRENCY` deliveries taken.
const NOTICE_BATCH: usize = 1_000;
const WEBHOOK_CONCURRENCY: usize = 512;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Every `client_msg_id` of every template send request the fake got, answered or not (the fake
/// itself records a repeated id once: it is WeChat's de-duplication key).
#[derive(Clone, Default)]
struct TemplateSends(Arc<Mutex<Vec<String>>>);

async fn record_template_sends(
    State(seen): State<TemplateSends>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    if req.uri().path() != "/cgi-bin/message/template/send" {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(id) = v["client_msg_id"].as_str()
    {
        seen.0.lock().unwrap().push(id.to_string());
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A delivery as the merchant's endpoint received it.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// When it arrived (seconds).
    at_secs: i64,
}

#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<Received>>>);

async fn receive(State(hooks): State<Hooks>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    // A receiver that takes a little while: the sender's per-endpoint limit keeps deliveries
    // flowing for a few seconds rather than all at once.
    tokio::time::sleep(Duration::from_millis(20)).await;
    hooks.0.lock().unwrap().push(Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        at_secs: now_ms() / 1000,
    });
    StatusCode::NO_CONTENT
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The ids in `state` in one of the notifier's outbox tables, read from the SQLite file of a
/// process that is not running.
async fn ids_in(db: &str, sql: &str) -> HashSet<String> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(db).await.expect("open the SQLite file");
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&mut c).await.expect("read the outbox");
    rows.into_iter().map(|r| r.0).collect()
}

fn repeated(ids: impl IntoIterator<Item = String>) -> HashSet<String> {
    let mut n: HashMap<String, usize> = HashMap::new();
    for id in ids {
        *n.entry(id).or_default() += 1;
    }
    n.into_iter().filter(|(_, k)| *k > 1).map(|(id, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_sending_it_loses_no_notice_or_webhook_and_repeats_only_what_was_in_flight() {
    // The receivers, in the test.
    let wechat = WechatMock::new(Arc::new(now_ms));
    wechat.register_app(APP_ID, "oa-app-secret", AppKind::OfficialAccount);
    wechat.add_template(APP_ID, TEMPLATE, &["thing1", "thing2"]);
    let sends = TemplateSends::default();
    let wechat_addr = serve(
        autodebit_mock_channels::wechat::router(wechat.clone())
            .layer(axum::middleware::from_fn_with_state(sends.clone(), record_template_sends)),
    )
    .await;
    let hooks = Hooks::default();
    let hooks_addr =
        serve(axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(hooks.clone())).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret_file = dir.path().join("oa-secret");
    std::fs::write(&secret_file, "oa-app-secret\n").unwrap();
    let wechat_url = format!("http://{wechat_addr}");
    let args = ["run", "--data-dir", data.to_str().unwrap(), "--wechat-api-url", &wechat_url];
    let db = format!("sqlite://{}/autodebit.db?mode=rw", data.display());

    let p = Process::start(&args);
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2NCRASH1").await;
    let settings = NotifierSettings {
        quiet_hours: "none".into(),
        official_account: Some(WechatChannel {
            app_id: APP_ID.into(),
            secret_ref: format!("file:{}", secret_file.display()),
            templates: [(
                "contract_signed".to_string(),
                WechatTemplate {
                    template_id: TEMPLATE.into(),
                    fields: [
                        ("thing1".to_string(), "{service_name}".to_string()),
                        ("thing2".to_string(), "signed".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                    page: String::new(),
                },
            )]
            .into_iter()
            .collect(),
            // Paced, so that the notices are still going out when the process dies.
            per_second_limit: 250,
        }),
        ..Default::default()
    };
    NotifierServiceClient::new(ch.clone())
        .set_notifier_settings(authed(SetNotifierSettingsRequest { settings: Some(settings) }, &merchant.api_key))
        .await
        .expect("SetNotifierSettings");
    let created = WebhooksServiceClient::new(ch.clone())
        .create_webhook_endpoint(authed(
            CreateWebhookEndpointRequest {
                url: format!("http://{hooks_addr}/hooks"),
                event_types: vec!["contract.signed".into()],
                description: "crash test".into(),
            },
            &merchant.api_key,
        ))
        .await
        .expect("CreateWebhookEndpoint")
        .into_inner();
    let secret = Secret::parse(&created.secret).expect("a whsec_ secret");

    // Sign the contracts (each under an idempotency key, so a call cut off by the kill can be
    // made again); kill the process once some of both kinds have arrived.
    let sign_all = |ch: tonic::transport::Channel| {
        let merchant = merchant.clone();
        async move {
            let contracts = ContractsServiceClient::new(ch);
            futures::stream::iter(0..CONTRACTS)
                .map(|i| {
                    let mut c = contracts.clone();
                    let mut req = sign_request(&merchant, &format!("payer-{i}"), 1_000);
                    req.idempotency_key = format!("crash-{i}");
                    async move { c.sign_contract(authed(req, OPERATOR_KEY)).await.map(|r| r.into_inner()) }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        }
    };
    let signing = tokio::spawn(sign_all(ch.clone()));
    let (notices_at_kill, hooks_at_kill) = eventually("some notices and webhooks to arrive", 60, || {
        let (n, h) = (wechat.messages().len(), hooks.0.lock().unwrap().len());
        async move { (n >= 100 && h >= 100).then_some((n, h)) }
    })
    .await;
    drop(p); // SIGKILL
    let signed_before_kill = signing.await.unwrap().iter().filter(|r| r.is_ok()).count();
    let (notices_at_kill, hooks_at_kill) =
        (notices_at_kill.max(wechat.messages().len()), hooks_at_kill.max(hooks.0.lock().unwrap().len()));
    println!(
        "killed with {notices_at_kill} notices and {hooks_at_kill} webhooks arrived, {signed_before_kill} of \
         {CONTRACTS} signing calls answered"
    );
    assert!(notices_at_kill < CONTRACTS && hooks_at_kill < CONTRACTS, "the kill came after everything had arrived");

    // What the senders had taken when the process died: the only deliveries that may come twice.
    let notices_in_flight = ids_in(&db, "SELECT notice_id FROM notifier_outbox WHERE state = 'sending'").await;
    let hooks_in_flight = ids_in(&db, "SELECT delivery_id FROM notifier_webhook_outbox WHERE state = 'sending'").await;
    println!("in flight at the kill: {} notices, {} webhooks", notices_in_flight.len(), hooks_in_flight.len());
    assert!(notices_in_flight.len() <= NOTICE_BATCH, "{} notices taken at once", notices_in_flight.len());
    assert!(hooks_in_flight.len() <= WEBHOOK_CONCURRENCY, "{} webhooks taken at once", hooks_in_flight.len());

    // Restart on the same data directory; sign whatever was not signed (the same keys).
    let p = Process::start(&args);
    let ch = p.channel().await;
    let signed = sign_all(ch.clone()).await;
    let contract_ids: HashSet<String> =
        signed.into_iter().map(|r| r.expect("SignContract").contract.expect("a contract").contract_id).collect();
    assert_eq!(contract_ids.len(), CONTRACTS);

    eventually("every notice and every webhook", 60, || {
        let (n, h) = (
            wechat.messages().len(),
            hooks.0.lock().unwrap().iter().map(|r| r.id.clone()).collect::<HashSet<_>>().len(),
        );
        async move { (n >= CONTRACTS && h >= CONTRACTS).then_some(()) }
    })
    .await;
    p.caught_up().await;
    // A moment for anything that would still come twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(p);

    // What the platform queued: one notice and one delivery per contract.
    let notices = ids_in(&db, "SELECT notice_id FROM notifier_outbox").await;
    let deliveries = ids_in(&db, "SELECT delivery_id FROM notifier_webhook_outbox").await;
    assert_eq!(notices.len(), CONTRACTS, "notices queued");
    assert_eq!(deliveries.len(), CONTRACTS, "webhook deliveries queued");
    let not_done = ids_in(&db, "SELECT notice_id FROM notifier_outbox WHERE state <> 'done'").await;
    assert!(not_done.is_empty(), "notices not done: {}", not_done.len());
    let not_succeeded = ids_in(&db, "SELECT delivery_id FROM notifier_webhook_outbox WHERE state <> 'succeeded'").await;
    assert!(not_succeeded.is_empty(), "deliveries not succeeded: {}", not_succeeded.len());

    // Notices: every one arrived, once per payer, and nothing arrived that was not queued.
    let messages = wechat.messages();
    let arrived: HashSet<String> = messages.iter().filter_map(|m| m.client_msg_id.clone()).collect();
    assert_eq!(arrived, notices, "the notices at WeChat are the notices queued");
    let payers: HashSet<&str> = messages.iter().map(|m| m.touser.as_str()).collect();
    assert_eq!(payers.len(), CONTRACTS, "one notice per payer");
    let requested = sends.0.lock().unwrap().clone();
    assert!(requested.iter().all(|id| notices.contains(id)), "a template send under an id not queued");
    let again = repeated(requested.clone());
    assert!(
        again.is_subset(&notices_in_flight),
        "notices sent twice that were not in flight: {:?}",
        again.difference(&notices_in_flight).collect::<Vec<_>>()
    );

    // Webhooks: every one arrived, each verifies, and only deliveries in flight came twice.
    let received = hooks.0.lock().unwrap().clone();
    let ids: HashSet<String> = received.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, deliveries, "the webhooks received are the deliveries queued");
    let mut contracts_told = HashSet::new();
    let mut body_of: HashMap<&str, &str> = HashMap::new();
    for r in &received {
        verify(&secret, &r.id, &r.timestamp, &r.signature, r.body.as_bytes(), r.at_secs, 300)
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", r.id));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["type"], "contract.signed", "{}", r.body);
        let contract = v["data"]["contract_id"].as_str().unwrap_or_else(|| panic!("no contract_id in {}", r.body));
        contracts_told.insert(contract.to_string());
        // A repeat is the same delivery: the same body under the same id.
        assert_eq!(*body_of.entry(&r.id).or_insert(&r.body), r.body.as_str(), "{} came again changed", r.id);
    }
    assert_eq!(contracts_told, contract_ids, "one webhook per contract signed");
    let hooks_again = repeated(received.iter().map(|r| r.id.clone()));
    assert!(
        hooks_again.is_subset(&hooks_in_flight),
        "webhooks sent twice that were not in flight: {:?}",
        hooks_again.difference(&hooks_in_flight).collect::<Vec<_>>()
    );
    println!(
        "{CONTRACTS} notices ({} template sends, {} notices sent twice of {} in flight), {CONTRACTS} webhooks \
         ({} received, {} sent twice of {} in flight)",
        requested.len(),
        again.len(),
        notices_in_flight.len(),
        received.len(),
        hooks_again.len(),
        hooks_in_flight.len()
    );
}
