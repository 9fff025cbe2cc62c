//! Merchants' webhooks end to end, on the test clock: endpoints made through the
//! WebhooksService, events the platform raises (a contract signed, a charge run) delivered to a
//! receiver on 127.0.0.1 that the test makes answer 200, 500 or never; signatures checked with
//! the notifier's own Standard Webhooks `verify`; retries as the clock moves; disabling after
//! three days of failures; rotation, redelivery, deletion; the API's refusals; one merchant's
//! hanging receiver not holding up another's deliveries.
use crate::scenario::{self, Merchant, charge_id, onboard, sign_on};
use crate::support::{TestApp, eventually};
use autodebit_notifier::webhooks::sign::{Secret, verify};
use autodebit_proto::events::v1::Cycle;
use autodebit_proto::notifier::v1::{
    self as pb, CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest, ListWebhookDeliveriesRequest,
    ListWebhookEndpointsRequest, RedeliverWebhookRequest, RotateWebhookSecretRequest, UpdateWebhookEndpointRequest,
};
use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

/// How a receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Fail,
    /// Never answers (until the receiver is dropped).
    Hang,
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: Instant,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }

    /// Whether it verifies under `secret`, within the specification's five minutes of now.
    fn verifies(&self, secret: &str) -> bool {
        let secret = Secret::parse(secret).expect("a whsec_ secret");
        self.timestamp.parse::<i64>().expect("a numeric webhook-timestamp");
        // Checked as a receiver checks it: against the wall clock, whatever the test clock says.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        verify(&secret, &self.id, &self.timestamp, &self.signature, &self.body, now, 300).is_ok()
    }
}

struct Shared {
    answer: Mutex<Answer>,
    /// Tries answered 500 before `answer` applies.
    fail_first: AtomicUsize,
    got: Mutex<Vec<Got>>,
    /// Requests being held unanswered now.
    hanging: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1:0 whose answers the test sets.
struct Receiver {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Counts a held request while its handler lives.
struct Holding(Arc<Shared>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.hanging.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let shared = Arc::new(Shared {
            answer: Mutex::new(answer),
            fail_first: AtomicUsize::new(0),
            got: Mutex::default(),
            hanging: AtomicUsize::new(0),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let handler = move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                state.got.lock().unwrap().push(Got {
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    body,
                    at: Instant::now(),
                });
                let failing =
                    state.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                if failing {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "not now");
                }
                let answer = *state.answer.lock().unwrap();
                match answer {
                    Answer::Ok => (StatusCode::OK, "ok"),
                    Answer::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "down"),
                    Answer::Hang => {
                        state.hanging.fetch_add(1, Ordering::SeqCst);
                        let _held = Holding(state.clone());
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                }
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver { url, shared, stop: Some(stop) }
    }

    fn set(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    fn fail_first(&self, n: usize) {
        self.shared.fail_first.store(n, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Got> {
        self.shared.got.lock().unwrap().clone()
    }

    fn hanging(&self) -> usize {
        self.shared.hanging.load(Ordering::SeqCst)
    }

    /// Waits for at least `n` requests in all.
    async fn wait_for(&self, n: usize, what: &str) -> Vec<Got> {
        eventually(what, 30, || {
            let got = self.got();
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn(&["--test-clock", "--decline-basis-points", "0", "--allow-loopback-webhooks"]).await
}

async fn create(app: &TestApp, m: &Merchant, url: &str, types: &[&str]) -> (pb::WebhookEndpoint, String) {
    let got = app
        .webhooks_as(&m.api_key)
        .create_webhook_endpoint(CreateWebhookEndpointRequest {
            url: url.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            description: "e2e".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateWebhookEndpoint {url}: {e}"))
        .into_inner();
    (got.endpoint.unwrap(), got.secret)
}

async fn deliveries(app: &TestApp, m: &Merchant, endpoint_id: &str) -> Vec<pb::WebhookDelivery> {
    app.webhooks_as(&m.api_key)
        .list_webhook_deliveries(ListWebhookDeliveriesRequest { endpoint_id: endpoint_id.into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

async fn endpoints(app: &TestApp, m: &Merchant) -> Vec<pb::WebhookEndpoint> {
    app.webhooks_as(&m.api_key)
        .list_webhook_endpoints(ListWebhookEndpointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .endpoints
}

/// Waits until `endpoint_id`'s only delivery satisfies `ok`.
async fn delivery_when(
    app: &TestApp,
    m: &Merchant,
    endpoint_id: &str,
    what: &str,
    ok: impl Fn(&pb::WebhookDelivery) -> bool,
) -> pb::WebhookDelivery {
    eventually(what, 30, || {
        let f = deliveries(app, m, endpoint_id);
        let ok = &ok;
        async move { f.await.into_iter().next().filter(|d| ok(d)) }
    })
    .await
}

/// The test clock's time, in ms.
async fn now_ms(app: &TestApp) -> i64 {
    use autodebit_proto::admin::v1::GetClockRequest;
    app.admin().get_clock(GetClockRequest {}).await.unwrap().into_inner().now_ms
}

/// Every key of `v`, at any depth, is snake_case.
fn keys_snake_case(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => o.iter().all(|(k, v)| {
            k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && keys_snake_case(v)
        }),
        serde_json::Value::Array(a) => a.iter().all(keys_snake_case),
        _ => true,
    }
}

fn assert_invalid(got: Result<impl std::fmt::Debug, tonic::Status>, field: &str, says: &str, case: &str) {
    let e = got.expect_err(case);
    assert_eq!(e.code(), Code::InvalidArgument, "{case}: {e:?}");
    assert!(e.message().starts_with(&format!("{field}: ")), "{case}: names {field}: {}", e.message());
    assert!(e.message().contains(says), "{case}: says {says:?}: {}", e.message());
}

#[tokio::test]
async fn subscribed_events_arrive_signed_with_the_documented_payloads() {
    let app = spawn().await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0001").await;
    let rx = Receiver::start(Answer::Ok).await;
    let (ep, secret) = create(&app, &m, &rx.url, &["contract.signed", "charge.succeeded"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(ep.endpoint_id.starts_with("we_") && ep.enabled && ep.disabled_reason.is_empty(), "{ep:?}");
    assert_eq!(ep.url, rx.url);
    assert_eq!(ep.event_types, ["contract.signed", "charge.succeeded"]);
    // The secret is shown once: the list does not carry it.
    let listed = endpoints(&app, &m).await;
    assert_eq!(listed, vec![ep.clone()]);

    let contract = sign_on(&ch, &m, &m.plan_id, "payer-wh-1", 2_500, Cycle::Monthly).await;
    let signed = rx.wait_for(1, "the contract.signed delivery").await;
    let period = scenario::bill_next_period(&ch, &contract).await;
    let got = rx.wait_for(2, "the charge.succeeded delivery").await;
    app.settled().await;
    // Nothing else (charge.scheduled, notices) is sent: only the subscribed types, once each.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = rx.got();
    assert_eq!(got_all.len(), 2, "{got_all:#?}");
    assert_eq!(signed[0].id, got[0].id);

    let [s, c] = [&got_all[0], &got_all[1]];
    assert_eq!((s.event_type().as_str(), c.event_type().as_str()), ("contract.signed", "charge.succeeded"));
    let wrong = Secret::from_bytes(vec![7u8; 32]).unwrap().format();
    for g in [s, c] {
        assert!(g.id.starts_with("msg_"), "{g:?}");
        assert!(g.signature.starts_with("v1,"), "{g:?}");
        assert!(g.verifies(&secret), "does not verify with the endpoint's secret: {g:?}");
        assert!(!g.verifies(&wrong), "verifies with any secret: {g:?}");
        let j = g.json();
        let o = j.as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["data", "timestamp", "type"], "{j}");
        chrono::DateTime::parse_from_rfc3339(j["timestamp"].as_str().unwrap()).expect("an RFC 3339 timestamp");
        assert!(keys_snake_case(&j), "{j}");
    }
    let sd = &s.json()["data"];
    assert_eq!(sd["contract_id"], contract.as_str());
    assert_eq!(sd["payer_id"], "payer-wh-1");
    assert_eq!(sd["plan_id"], m.plan_id.as_str());
    assert_eq!(sd["amount_per_cycle"], serde_json::json!({"minor_units": 2500, "currency": "CNY"}));
    let cd = &c.json()["data"];
    assert_eq!(cd["charge_id"], charge_id(&contract, period).as_str());
    assert_eq!(cd["contract_id"], contract.as_str());
    assert_eq!(cd["payer_id"], "payer-wh-1");
    assert_eq!(cd["amount"], serde_json::json!({"minor_units": 2500, "currency": "CNY"}));
    assert!(!cd["provider_transaction_id"].as_str().unwrap_or_default().is_empty(), "{cd}");

    // The deliveries' log says the same: two, both succeeded on the first try, same ids.
    let list = deliveries(&app, &m, &ep.endpoint_id).await;
    let mut ids: Vec<(String, String, String, u32, u32)> = list
        .iter()
        .map(|d| (d.delivery_id.clone(), d.event_type.clone(), d.state.clone(), d.attempts, d.last_status))
        .collect();
    ids.sort();
    let mut want = vec![
        (s.id.clone(), "contract.signed".to_string(), "succeeded".to_string(), 1, 200),
        (c.id.clone(), "charge.succeeded".to_string(), "succeeded".to_string(), 1, 200),
    ];
    want.sort();
    assert_eq!(ids, want);
    for d in &list {
        let g = got_all.iter().find(|g| g.id == d.delivery_id).unwrap();
        assert_eq!(d.payload, g.body);
        assert_eq!(d.endpoint_id, ep.endpoint_id);
    }
}

#[tokio::test]
async fn failed_deliveries_are_retried_on_the_schedule_as_the_clock_moves() {
    let app = spawn().await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0002").await;
    let rx = Receiver::start(Answer::Ok).await;
    rx.fail_first(2);
    let (ep, secret) = create(&app, &m, &rx.url, &["contract.signed"]).await;
    sign_on(&ch, &m, &m.plan_id, "payer-wh-2", 1_000, Cycle::Monthly).await;

    let first = rx.wait_for(1, "the first try").await;
    let d = delivery_when(&app, &m, &ep.endpoint_id, "the first try recorded", |d| d.attempts == 1).await;
    assert_eq!((d.state.as_str(), d.last_status, d.delivery_id.as_str()), ("pending", 500, first[0].id.as_str()));
    assert!(d.last_error.starts_with("HTTP 500"), "{d:?}");
    // The first retry comes 5 s later, ± 20 %.
    let wait = d.next_attempt_at_ms - d.created_at_ms;
    assert!((4_000..=6_000).contains(&wait), "first retry after {wait} ms");

    // Not before its time: 3 s on, nothing more is sent.
    app.advance_seconds(3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 1, "retried before its time");

    // At its time, the second try, same webhook-id; it fails too.
    scenario::advance_to(&ch, d.next_attempt_at_ms).await;
    rx.wait_for(2, "the second try").await;
    let d2 = delivery_when(&app, &m, &ep.endpoint_id, "the second try recorded", |d| d.attempts == 2).await;
    assert_eq!((d2.state.as_str(), d2.last_status), ("pending", 500));
    let second_at = now_ms(&app).await;
    assert!((d.next_attempt_at_ms..d.next_attempt_at_ms + 1_000).contains(&second_at));
    let wait = d2.next_attempt_at_ms - second_at;
    assert!((240_000..=360_000).contains(&wait), "second retry after {wait} ms: {d2:?}");

    // A minute on: still not.
    app.advance_seconds(60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 2, "retried before its time");

    scenario::advance_to(&ch, d2.next_attempt_at_ms).await;
    let got = rx.wait_for(3, "the third try").await;
    let d3 = delivery_when(&app, &m, &ep.endpoint_id, "the third try recorded", |d| d.state == "succeeded").await;
    assert_eq!((d3.attempts, d3.last_status), (3, 200), "{d3:?}");
    assert!(d3.last_error.is_empty(), "{d3:?}");
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.id == d.delivery_id), "{got:#?}");
    assert!(got.iter().all(|g| g.body == got[0].body));
    assert!(got.iter().all(|g| g.verifies(&secret)));
    // Each try is signed when it is sent, by the wall clock (seconds: tries close together may
    // share one).
    let stamps: Vec<i64> = got.iter().map(|g| g.timestamp.parse().unwrap()).collect();
    assert!(stamps[0] <= stamps[1] && stamps[1] <= stamps[2], "{stamps:?}");

    // Succeeded: no more tries, however far the clock moves.
    app.advance(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 3);
}

#[tokio::test]
async fn an_endpoint_failing_for_three_days_is_disabled_and_the_merchant_told() {
    let app = spawn().await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0003").await;
    let failing = Receiver::start(Answer::Fail).await;
    let watching = Receiver::start(Answer::Ok).await;
    let (bad, _) = create(&app, &m, &failing.url, &["contract.signed"]).await;
    let (good, good_secret) = create(&app, &m, &watching.url, &["webhook_endpoint.disabled"]).await;
    sign_on(&ch, &m, &m.plan_id, "payer-wh-3", 1_000, Cycle::Monthly).await;

    let first = delivery_when(&app, &m, &bad.endpoint_id, "the first try", |d| d.attempts == 1).await;
    let since = first.created_at_ms;
    let three_days = 3 * 86_400_000;
    let mut tries = 1;
    loop {
        let d = deliveries(&app, &m, &bad.endpoint_id).await.remove(0);
        let ep = endpoints(&app, &m).await.into_iter().find(|e| e.endpoint_id == bad.endpoint_id).unwrap();
        if !ep.enabled {
            assert_eq!(ep.disabled_reason, "every delivery failed for 3 days");
            assert!(now_ms(&app).await - since >= three_days, "disabled before 3 days of failures");
            // What was waiting for it is not sent.
            assert_eq!(d.state, "failed", "{d:?}");
            break;
        }
        assert!(tries <= 12, "still enabled after {tries} tries: {d:?}");
        assert_eq!(d.state, "pending", "given up before the endpoint was disabled: {d:?}");
        scenario::advance_to(&ch, d.next_attempt_at_ms).await;
        tries += 1;
        let want = tries as u32;
        eventually("the next try recorded", 30, || {
            let f = deliveries(&app, &m, &bad.endpoint_id);
            let g = endpoints(&app, &m);
            let id = bad.endpoint_id.clone();
            async move {
                let d = f.await.remove(0);
                let off = g.await.into_iter().any(|e| e.endpoint_id == id && !e.enabled);
                // Given up (its last try) but not yet disabled: the disabling follows.
                (off || (d.attempts >= want && d.state == "pending")).then_some(())
            }
        })
        .await;
    }
    assert!(failing.got().len() >= 10, "{} tries", failing.got().len());
    assert!(failing.got().iter().all(|g| g.id == first.delivery_id));

    // The other endpoint hears of it.
    let told = watching.wait_for(1, "webhook_endpoint.disabled").await;
    assert_eq!(told.len(), 1, "{told:#?}");
    let j = told[0].json();
    assert_eq!(j["type"], "webhook_endpoint.disabled");
    assert_eq!(j["data"]["endpoint_id"], bad.endpoint_id.as_str());
    assert_eq!(j["data"]["reason"], "every delivery failed for 3 days");
    assert_eq!(j["data"]["failing_since_ms"], since);
    assert!(told[0].verifies(&good_secret));
    let list = endpoints(&app, &m).await;
    assert!(list.iter().any(|e| e.endpoint_id == good.endpoint_id && e.enabled), "{list:?}");

    // A disabled endpoint gets nothing more; re-enabled, it does.
    let before = failing.got().len();
    sign_on(&ch, &m, &m.plan_id, "payer-wh-3b", 1_000, Cycle::Monthly).await;
    app.caught_up().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(failing.got().len(), before, "a disabled endpoint was sent to");
    failing.set(Answer::Ok);
    let on = app
        .webhooks_as(&m.api_key)
        .update_webhook_endpoint(UpdateWebhookEndpointRequest {
            endpoint_id: bad.endpoint_id.clone(),
            url: String::new(),
            event_types: vec![],
            description: "back".into(),
            enabled: true,
        })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert!(on.enabled && on.disabled_reason.is_empty(), "{on:?}");
    sign_on(&ch, &m, &m.plan_id, "payer-wh-3c", 1_000, Cycle::Monthly).await;
    failing.wait_for(before + 1, "a delivery to the re-enabled endpoint").await;
}

#[tokio::test]
async fn rotation_redelivery_and_deletion() {
    let app = spawn().await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0004").await;
    let rx = Receiver::start(Answer::Ok).await;
    let (ep, old) = create(&app, &m, &rx.url, &["contract.signed"]).await;
    let mut hooks = app.webhooks_as(&m.api_key);

    sign_on(&ch, &m, &m.plan_id, "payer-wh-4a", 1_000, Cycle::Monthly).await;
    let got = rx.wait_for(1, "the first delivery").await;
    assert!(got[0].verifies(&old));

    let new = hooks
        .rotate_webhook_secret(RotateWebhookSecretRequest { endpoint_id: ep.endpoint_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(new.starts_with("whsec_") && new != old, "{new}");
    sign_on(&ch, &m, &m.plan_id, "payer-wh-4b", 1_000, Cycle::Monthly).await;
    let got = rx.wait_for(2, "a delivery after the rotation").await;
    assert!(got[1].verifies(&new), "a delivery after the rotation does not verify with the new secret");
    assert!(!got[1].verifies(&old), "a delivery after the rotation verifies with the old secret");

    // Redelivery: the first message again, same webhook-id and body, signed with today's secret.
    let first_id = got[0].id.clone();
    let again = hooks
        .redeliver_webhook(RedeliverWebhookRequest { delivery_id: first_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(again.delivery_id, first_id);
    let got = rx.wait_for(3, "the redelivery").await;
    assert_eq!(got[2].id, first_id);
    assert_eq!(got[2].body, got[0].body);
    assert!(got[2].verifies(&new) && !got[2].verifies(&old));
    let d = eventually("the redelivery recorded", 30, || {
        let f = deliveries(&app, &m, &ep.endpoint_id);
        let id = first_id.clone();
        async move { f.await.into_iter().find(|d| d.delivery_id == id && d.attempts == 2 && d.state == "succeeded") }
    })
    .await;
    assert_eq!(d.last_status, 200);
    let unknown = hooks
        .redeliver_webhook(RedeliverWebhookRequest { delivery_id: "msg_00000000000000000000000000000000".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // Deleted: nothing more is sent, and the endpoint is gone from every call.
    hooks.delete_webhook_endpoint(DeleteWebhookEndpointRequest { endpoint_id: ep.endpoint_id.clone() }).await.unwrap();
    assert!(endpoints(&app, &m).await.is_empty());
    sign_on(&ch, &m, &m.plan_id, "payer-wh-4c", 1_000, Cycle::Monthly).await;
    app.caught_up().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 3, "a deleted endpoint was sent to");
    let gone = hooks
        .list_webhook_deliveries(ListWebhookDeliveriesRequest { endpoint_id: ep.endpoint_id.clone(), limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let gone = hooks.redeliver_webhook(RedeliverWebhookRequest { delivery_id: first_id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition, "{gone:?}");
    let gone = hooks.rotate_webhook_secret(RotateWebhookSecretRequest { endpoint_id: ep.endpoint_id.clone() }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
    let gone = hooks.delete_webhook_endpoint(DeleteWebhookEndpointRequest { endpoint_id: ep.endpoint_id }).await;
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    // Without --allow-loopback-webhooks, as `serve` runs.
    let app = TestApp::spawn(&["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0005").await;
    let mut hooks = app.webhooks_as(&m.api_key);
    let create = |url: &str, types: &[&str]| CreateWebhookEndpointRequest {
        url: url.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        description: String::new(),
    };
    let ok = ["charge.succeeded"];
    let cases: Vec<(CreateWebhookEndpointRequest, &str, &str)> = vec![
        (create("", &ok), "url", "required"),
        (create("not a url", &ok), "url", "not a valid absolute URL"),
        (create("https://", &ok), "url", ""),
        (create("http://example.com/hook", &ok), "url", "scheme \"http\" is not allowed"),
        (create("ftp://example.com/hook", &ok), "url", "scheme \"ftp\" is not allowed"),
        (create("https://127.0.0.1/hook", &ok), "url", "address 127.0.0.1 is private, loopback or reserved"),
        (create("http://127.0.0.1:8080/hook", &ok), "url", "address 127.0.0.1"),
        (create("https://[::1]/hook", &ok), "url", "address ::1"),
        (create("https://10.1.2.3/hook", &ok), "url", "address 10.1.2.3"),
        (create("https://192.168.0.10/hook", &ok), "url", "address 192.168.0.10"),
        (create("https://169.254.169.254/latest", &ok), "url", "address 169.254.169.254"),
        (create("https://localhost/hook", &ok), "url", "loopback name"),
        (create("https://user:pw@93.184.216.34/hook", &ok), "url", "user name or password"),
        (
            create("https://93.184.216.34/hook", &["charge.exploded"]),
            "event_types",
            "unknown event type `charge.exploded`",
        ),
        (create("https://93.184.216.34/hook", &[]), "event_types", "at least one event type"),
    ];
    for (req, field, says) in cases {
        let case = format!("{req:?}");
        assert_invalid(hooks.create_webhook_endpoint(req).await, field, says, &case);
    }
    // A name that resolves to loopback (this machine's own name, from /etc/hosts) is refused
    // once resolved.
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let resolved: Vec<std::net::IpAddr> = match tokio::net::lookup_host((own.as_str(), 443)).await {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(_) => vec![],
    };
    if !own.is_empty() && !resolved.is_empty() && resolved.iter().all(|ip| ip.is_loopback()) {
        let got = hooks.create_webhook_endpoint(create(&format!("https://{own}/hook"), &ok)).await;
        assert_invalid(got, "url", &format!("host {own} resolves to"), "a name resolving to loopback");
    } else {
        eprintln!("note: {own:?} does not resolve to loopback here ({resolved:?}); that case was not run");
    }
    // Nothing was made.
    assert!(
        hooks.list_webhook_endpoints(ListWebhookEndpointsRequest {}).await.unwrap().into_inner().endpoints.is_empty()
    );

    // A public address is taken (nothing is sent to it without events).
    let made = hooks.create_webhook_endpoint(create("https://93.184.216.34/hook", &ok)).await.unwrap().into_inner();
    let id = made.endpoint.unwrap().endpoint_id;
    let update = |url: &str, types: &[&str]| UpdateWebhookEndpointRequest {
        endpoint_id: id.clone(),
        url: url.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        description: String::new(),
        enabled: true,
    };
    assert_invalid(
        hooks.update_webhook_endpoint(update("http://example.com/x", &[])).await,
        "url",
        "scheme",
        "update url",
    );
    assert_invalid(
        hooks.update_webhook_endpoint(update("https://127.0.0.1/x", &[])).await,
        "url",
        "address 127.0.0.1",
        "update url",
    );
    assert_invalid(
        hooks.update_webhook_endpoint(update("", &["charge.exploded"])).await,
        "event_types",
        "unknown event type",
        "update types",
    );

    // The operator has no endpoints of its own.
    let got = app.webhooks().list_webhook_endpoints(ListWebhookEndpointsRequest {}).await.unwrap_err();
    assert_eq!(got.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn another_merchants_endpoint_is_not_found() {
    let app = spawn().await;
    let ch = app.channel().await;
    let a = onboard(&ch, "91330100MA2WHK0006").await;
    let b = onboard(&ch, "91330100MA2WHK0007").await;
    let rx = Receiver::start(Answer::Ok).await;
    let (ep, _) = create(&app, &a, &rx.url, &["contract.signed"]).await;
    sign_on(&ch, &a, &a.plan_id, "payer-wh-6", 1_000, Cycle::Monthly).await;
    let got = rx.wait_for(1, "A's delivery").await;
    let mut theirs = app.webhooks_as(&b.api_key);
    let nobody = "we_0000000000000000000000000000000f".to_string();
    for id in [ep.endpoint_id.clone(), nobody] {
        let update = UpdateWebhookEndpointRequest {
            endpoint_id: id.clone(),
            url: String::new(),
            event_types: vec![],
            description: "mine now".into(),
            enabled: false,
        };
        let e = theirs.update_webhook_endpoint(update).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "endpoint_id: no such endpoint"), "update {id}");
        let e =
            theirs.delete_webhook_endpoint(DeleteWebhookEndpointRequest { endpoint_id: id.clone() }).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "endpoint_id: no such endpoint"), "delete {id}");
        let e = theirs.rotate_webhook_secret(RotateWebhookSecretRequest { endpoint_id: id.clone() }).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "endpoint_id: no such endpoint"), "rotate {id}");
        let e = theirs
            .list_webhook_deliveries(ListWebhookDeliveriesRequest { endpoint_id: id.clone(), limit: 0 })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "endpoint_id: no such endpoint"), "deliveries {id}");
    }
    let e = theirs.redeliver_webhook(RedeliverWebhookRequest { delivery_id: got[0].id.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(endpoints(&app, &b).await.is_empty());
    // A's endpoint is as it was.
    assert_eq!(endpoints(&app, &a).await, vec![ep]);
    assert_eq!(rx.got().len(), 1, "B's redelivery reached A's receiver");
}

#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_another_merchants_deliveries() {
    let app = spawn().await;
    let ch = app.channel().await;
    let a = onboard(&ch, "91330100MA2WHK0008").await;
    let b = onboard(&ch, "91330100MA2WHK0009").await;
    let slow = Receiver::start(Answer::Hang).await;
    let fast = Receiver::start(Answer::Ok).await;
    create(&app, &a, &slow.url, &["contract.signed"]).await;
    let (bep, bsecret) = create(&app, &b, &fast.url, &["contract.signed"]).await;

    // More of A's deliveries than an endpoint may have in flight.
    for i in 0..20 {
        sign_on(&ch, &a, &a.plan_id, &format!("payer-wh-8-{i}"), 1_000, Cycle::Monthly).await;
    }
    slow.wait_for(16, "A's deliveries to be held").await;
    let held_at = Instant::now();
    sign_on(&ch, &b, &b.plan_id, "payer-wh-9", 1_000, Cycle::Monthly).await;
    let got = fast.wait_for(1, "B's delivery while A's hang").await;
    // A's were still unanswered, and within the sender's time limit, when B's arrived.
    let arrived = got[0].at;
    let still_held = slow.hanging();
    assert!(still_held >= 1, "A's requests were no longer held");
    let first_a = slow.got().iter().map(|g| g.at).min().unwrap();
    assert!(
        arrived < first_a + autodebit_notifier::webhooks::send::TIMEOUT,
        "B's delivery came only after A's first tries had timed out"
    );
    assert!(arrived >= held_at);
    assert!(got[0].verifies(&bsecret));
    let d = delivery_when(&app, &b, &bep.endpoint_id, "B's delivery recorded", |d| d.state == "succeeded").await;
    assert_eq!(d.attempts, 1);
    // A's endpoint never had more than its share in flight at once: before its first tries
    // timed out, 16 had arrived.
    let early = slow.got().iter().filter(|g| g.at < first_a + autodebit_notifier::webhooks::send::TIMEOUT).count();
    assert_eq!(early, 16, "A's tries in flight at once");
}

/// `autodebit log import` into an empty database brings back what merchants set up, in force:
/// the endpoint (same URL, types and secret generation) is listed and its deliveries go out,
/// the merchant's own template is listed, its channel settings are in the table the sender reads.
#[tokio::test]
async fn endpoints_templates_and_settings_survive_a_log_export_and_import() {
    use crate::support::Process;
    use autodebit_proto::events::v1::{NoticeKind, NotifierSettings};
    use autodebit_proto::notifier::v1::{
        ListNoticeTemplatesRequest, SetNoticeTemplateRequest, SetNotifierSettingsRequest,
    };

    let app = spawn().await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2WHK0009").await;
    let rx = Receiver::start(Answer::Ok).await;
    let (ep, _) = create(&app, &m, &rx.url, &["contract.signed", "charge.succeeded"]).await;
    let mut notifier = app.notifier_as(&m.api_key);
    notifier
        .set_notifier_settings(SetNotifierSettingsRequest {
            settings: Some(NotifierSettings { quiet_hours: "none".into(), ..Default::default() }),
        })
        .await
        .expect("SetNotifierSettings");
    let body = "已为您开通{service_name}。{link}";
    notifier
        .set_notice_template(SetNoticeTemplateRequest {
            kind: NoticeKind::ContractSigned as i32,
            language: "zh-CN".into(),
            body: body.into(),
        })
        .await
        .expect("SetNoticeTemplate");
    app.caught_up().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.jsonl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run autodebit");
        assert!(out.status.success(), "autodebit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["log", "export", "--database-url", app.database(), "--out", file.to_str().unwrap()]);
    drop(app);
    let data = dir.path().join("imported");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}/autodebit.db?mode=rwc", data.display());
    run(&["log", "import", "--database-url", &url, "--in", file.to_str().unwrap()]);

    let p = Process::start(&["run", "--data-dir", data.to_str().unwrap(), "--test-clock", "--allow-loopback-webhooks"]);
    let ch = p.channel().await;
    // The imported log is taken in afresh, the key tables with it.
    p.caught_up().await;
    let mut hooks = autodebit_proto::notifier::v1::webhooks_service_client::WebhooksServiceClient::new(ch.clone());
    let listed = hooks
        .list_webhook_endpoints(crate::support::authed(ListWebhookEndpointsRequest {}, &m.api_key))
        .await
        .expect("ListWebhookEndpoints after the import")
        .into_inner()
        .endpoints;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0].endpoint_id, &listed[0].url, &listed[0].event_types),
        (&ep.endpoint_id, &ep.url, &ep.event_types)
    );
    let mut notices = autodebit_proto::notifier::v1::notifier_service_client::NotifierServiceClient::new(ch.clone());
    let templates = notices
        .list_notice_templates(crate::support::authed(ListNoticeTemplatesRequest {}, &m.api_key))
        .await
        .expect("ListNoticeTemplates after the import")
        .into_inner()
        .templates;
    assert!(templates.iter().any(|t| t.overridden && t.body == body), "the merchant's template is back");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/autodebit.db?mode=ro", data.display())).await.unwrap();
    let kept: Vec<(String,)> =
        sqlx::query_as("SELECT merchant_id FROM notifier_settings").fetch_all(&db).await.unwrap();
    assert_eq!(kept, vec![(m.merchant_id.clone(),)], "the merchant's settings are in force");

    // The endpoint works: a contract signed after the import is delivered to it.
    sign_on(&ch, &m, &m.plan_id, "payer-wh-import", 1_000, Cycle::Monthly).await;
    let got = rx.wait_for(1, "a delivery after the import").await;
    assert_eq!(got[0].event_type(), "contract.signed");
}
