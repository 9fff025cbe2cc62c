//! What the contracts service puts in the log for the notifier to tell the payer: the warning
//! that a contract's validity ends within seven days (`ContractExpiring`), the payer's phone
//! and language with the contract a signing session signs (`ContractSigned`), and the SMS code
//! a session requires (`VerificationCodeIssued`). Each test runs `autodebit run` and reads the
//! log it wrote.
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::contracts::v1::{
    Contract, ContractState, CreateSigningSessionRequest, GetContractRequest, GetSigningSessionRequest, SigningSession,
    SigningState, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{Cycle, Event, SigningChannel, event::Kind};
use prost::Message;
use scenario::{Merchant, authed, onboard};
use support::{Backend, Process, element_text, eventually, http_get, http_post, path_of};
use tonic::Code;
use tonic::transport::Channel;

const DAY_SECS: i64 = 86_400;
const DAY_MS: i64 = 86_400_000;

both!(
    a_contract_is_warned_once_seven_days_before_it_expires,
    the_payers_phone_and_language_go_with_the_session_its_code_and_its_contract,
);

/// `autodebit run` on a test clock, declining nothing, and where its log is (a read-only URL
/// for SQLite). The directory holds the SQLite file; keep it while the process runs.
async fn start(backend: Backend) -> (Process, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let common = ["--test-clock", "--decline-basis-points", "0"];
    match backend {
        Backend::Sqlite => {
            let data = dir.path().to_str().expect("a UTF-8 path").to_string();
            let p = Process::start(&[&["run", "--data-dir", &data][..], &common].concat());
            (p, format!("sqlite://{data}/autodebit.db?mode=ro"), dir)
        }
        Backend::Postgres => {
            let url = autodebit_eventstore::testing::fresh_postgres_url().await;
            let p = Process::start(&[&["run", "--database-url", &url][..], &common].concat());
            (p, url, dir)
        }
    }
}

/// Every event of `event_type` in the log at `database`, in the order they were written.
async fn events_of(database: &str, event_type: &str) -> Vec<Kind> {
    use sqlx::Connection;
    let sql = format!("SELECT payload FROM events WHERE event_type = '{event_type}' ORDER BY position");
    let rows: Vec<(Vec<u8>,)> = if database.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(database).await.expect("open the SQLite log");
        sqlx::query_as(&sql).fetch_all(&mut db).await.expect("read the log")
    } else {
        let mut db = sqlx::PgConnection::connect(database).await.expect("open the PostgreSQL log");
        sqlx::query_as(&sql).fetch_all(&mut db).await.expect("read the log")
    };
    rows.into_iter()
        .map(|(payload,)| Event::decode(payload.as_slice()).expect("an Event").kind.expect("a kind"))
        .collect()
}

/// The `ContractExpiring` events of `contract`: (payer, expires at, warned at).
async fn warnings(database: &str, contract: &str) -> Vec<(String, i64, i64)> {
    events_of(database, "ContractExpiring")
        .await
        .into_iter()
        .filter_map(|k| match k {
            Kind::ContractExpiring(w) if w.contract_id == contract => {
                Some((w.payer_id, w.expires_at_ms, w.warned_at_ms))
            }
            _ => None,
        })
        .collect()
}

/// The `ContractSigned` event of `contract`.
async fn signed_event(database: &str, contract: &str) -> autodebit_proto::events::v1::ContractSigned {
    events_of(database, "ContractSigned")
        .await
        .into_iter()
        .find_map(|k| match k {
            Kind::ContractSigned(s) if s.contract_id == contract => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ContractSigned of {contract}"))
}

async fn advance_days(ch: &Channel, days: i64) {
    let req = AdvanceClockRequest { seconds: days * DAY_SECS };
    AdminServiceClient::new(ch.clone()).advance_clock(support::op(req)).await.expect("AdvanceClock");
}

async fn contract(ch: &Channel, id: &str) -> Contract {
    let req = GetContractRequest { contract_id: id.into(), merchant_contract_code: String::new() };
    ContractsServiceClient::new(ch.clone()).get_contract(support::op(req)).await.unwrap().into_inner().contract.unwrap()
}

/// A plan of `validity_days` (and a service period of 30 days).
async fn plan_valid_for(ch: &Channel, m: &Merchant, validity_days: u32) -> String {
    scenario::create_plan(ch, m, |t| {
        t.service_period_days = 30;
        t.validity_days = validity_days;
    })
    .await
}

async fn a_contract_is_warned_once_seven_days_before_it_expires(backend: Backend) {
    let (p, database, _dir) = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2WRN0001").await;
    let sixty = plan_valid_for(&ch, &m, 60).await;
    let fifty_nine = plan_valid_for(&ch, &m, 59).await;
    let id = scenario::sign_on(&ch, &m, &sixty, "payer-warned", 1_000, Cycle::Monthly).await;
    // A day ahead of it: its warning shows that the clean-up has looked at the moment the
    // clock was moved to.
    let marker = scenario::sign_on(&ch, &m, &fifty_nine, "payer-marker", 1_000, Cycle::Monthly).await;
    let c = contract(&ch, &id).await;
    assert_eq!(c.expires_at_ms - c.signed_at_ms, 60 * DAY_MS);

    // Eight days before the end: not yet (while the other contract, seven days before its
    // end, is warned in the same sweep).
    advance_days(&ch, 52).await;
    eventually("the marker's warning", 30, || {
        let (database, marker) = (database.clone(), marker.clone());
        async move { (!warnings(&database, &marker).await.is_empty()).then_some(()) }
    })
    .await;
    assert!(warnings(&database, &id).await.is_empty(), "warned eight days ahead");

    // Seven days before the end: warned, at that moment.
    advance_days(&ch, 1).await;
    let warned = eventually("the warning", 30, || {
        let (database, id) = (database.clone(), id.clone());
        async move { Some(warnings(&database, &id).await).filter(|w| !w.is_empty()) }
    })
    .await;
    assert_eq!(warned, vec![("payer-warned".to_string(), c.expires_at_ms, c.expires_at_ms - 7 * DAY_MS)]);
    assert_eq!(contract(&ch, &id).await.state, ContractState::Active as i32, "a warning changes nothing else");

    // Day by day to the end, each move waking the clean-up: no second warning, then the expiry.
    for _ in 0..7 {
        advance_days(&ch, 1).await;
    }
    let expired = eventually("the expiry", 30, || {
        let (ch, id) = (ch.clone(), id.clone());
        async move { Some(contract(&ch, &id).await).filter(|c| c.state == ContractState::Expired as i32) }
    })
    .await;
    assert_eq!(expired.ended_at_ms, c.expires_at_ms, "expired at the end of its validity");
    assert_eq!(warnings(&database, &id).await, warned, "exactly one warning");
    assert_eq!(warnings(&database, &marker).await.len(), 1);
}

fn session_request(m: &Merchant, payer: &str, ip: &str, phone: &str, language: &str) -> CreateSigningSessionRequest {
    CreateSigningSessionRequest {
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
    }
}

async fn open(ch: &Channel, m: &Merchant, req: CreateSigningSessionRequest) -> SigningSession {
    let mut c = ContractsServiceClient::new(ch.clone());
    c.create_signing_session(authed(req, &m.api_key)).await.unwrap().into_inner().session.unwrap()
}

async fn session(ch: &Channel, m: &Merchant, id: &str) -> SigningSession {
    let req = GetSigningSessionRequest { session_id: id.into() };
    let mut c = ContractsServiceClient::new(ch.clone());
    c.get_signing_session(authed(req, &m.api_key)).await.unwrap().into_inner().session.unwrap()
}

/// Ticks and confirms on the session's page (with the SMS code first, when given); returns the
/// contract signed.
async fn sign_on_page(p: &Process, ch: &Channel, m: &Merchant, s: &SigningSession, sms: Option<&str>) -> String {
    let page = path_of(&s.authorization_url);
    let (_, html) = http_get(p.http, &page).await;
    let code = element_text(&html, "code-hint").expect("the simulator's confirmation code");
    if let Some(sms) = sms {
        http_post(p.http, &format!("{page}/sms"), &format!("code={sms}")).await;
    }
    http_post(p.http, &format!("{page}/tick"), "agree=yes").await;
    http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await;
    let done = session(ch, m, &s.session_id).await;
    assert_eq!(done.state, SigningState::Confirmed as i32, "{done:?}");
    done.contract_id
}

async fn the_payers_phone_and_language_go_with_the_session_its_code_and_its_contract(backend: Backend) {
    let (p, database, _dir) = start(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2PHN0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());

    // A phone, when given, is E.164.
    for bad in ["13800138000", "+86 138 0013 8000", "+1234567", "+1234567890123456", "+86138001380x0"] {
        let req = session_request(&m, "payer-bad", "192.0.2.10", bad, "");
        let err = c.create_signing_session(authed(req, &m.api_key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().starts_with("payer_phone"), "{bad}: {}", err.message());
    }

    // Signed in English from the payer's usual region (Beijing, the first session): no SMS.
    let first = open(&ch, &m, session_request(&m, "payer-phone", "192.0.2.10", "+8613800138000", "en")).await;
    assert!(!first.sms_verification_required);
    let signed = sign_on_page(&p, &ch, &m, &first, None).await;
    let e = signed_event(&database, &signed).await;
    assert_eq!((e.payer_phone.as_str(), e.language.as_str()), ("+8613800138000", "en"));
    let opened = events_of(&database, "SigningSessionOpened").await;
    assert!(
        opened.iter().any(|k| matches!(k, Kind::SigningSessionOpened(o)
            if o.session_id == first.session_id && o.payer_phone == "+8613800138000")),
        "{opened:?}"
    );

    // From Shanghai, the same payer needs an SMS code: it is in the log for the notifier, with
    // the phone, the session's expiry and the language; the code checks on the page.
    let far = open(&ch, &m, session_request(&m, "payer-phone", "198.51.100.7", "+8613900139000", "")).await;
    assert!(far.sms_verification_required);
    let issued: Vec<_> = events_of(&database, "VerificationCodeIssued")
        .await
        .into_iter()
        .filter_map(|k| match k {
            Kind::VerificationCodeIssued(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let v = &issued[0];
    assert_eq!(
        (v.session_id.as_str(), v.merchant_id.as_str(), v.payer_id.as_str(), v.phone.as_str(), v.language.as_str()),
        (far.session_id.as_str(), m.merchant_id.as_str(), "payer-phone", "+8613900139000", "zh-CN")
    );
    assert_eq!(v.expires_at_ms, far.expires_at_ms, "good only while the session is open");
    assert!(v.issued_at_ms < v.expires_at_ms);
    assert_eq!(v.code.len(), 6);
    let (_, html) = http_get(p.http, &path_of(&far.authorization_url)).await;
    assert_eq!(element_text(&html, "sms-hint").as_deref(), Some(v.code.as_str()), "the simulator's page shows it");
    let wrong = if v.code == "000000" { "111111" } else { "000000" };
    http_post(p.http, &format!("{}/sms", path_of(&far.authorization_url)), &format!("code={wrong}")).await;
    assert!(session(&ch, &m, &far.session_id).await.sms_verification_required, "a wrong code is refused");
    let signed = sign_on_page(&p, &ch, &m, &far, Some(&v.code)).await;
    let e = signed_event(&database, &signed).await;
    assert_eq!((e.payer_phone.as_str(), e.language.as_str()), ("+8613900139000", "zh-CN"));

    // No phone given, none recorded; a contract signed without a session has neither.
    let quiet = open(&ch, &m, session_request(&m, "payer-quiet", "192.0.2.10", "", "zh")).await;
    let signed = sign_on_page(&p, &ch, &m, &quiet, None).await;
    let e = signed_event(&database, &signed).await;
    assert_eq!((e.payer_phone.as_str(), e.language.as_str()), ("", "zh-CN"));
    let imported = scenario::sign_on(&ch, &m, &m.plan_id, "payer-import", 1_000, Cycle::Monthly).await;
    let e = signed_event(&database, &imported).await;
    assert_eq!((e.payer_phone.as_str(), e.language.as_str()), ("", ""));
    assert_eq!(events_of(&database, "VerificationCodeIssued").await.len(), 1, "only the session that needed one");

    // The same idempotency key with another phone is another request.
    let mut keyed = session_request(&m, "payer-keyed", "192.0.2.10", "+8613800138000", "");
    keyed.idempotency_key = "phone-key".into();
    let first = open(&ch, &m, keyed.clone()).await;
    assert_eq!(open(&ch, &m, keyed.clone()).await.session_id, first.session_id);
    keyed.payer_phone = "+8613800138001".into();
    let err = c.create_signing_session(authed(keyed, &m.api_key)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}
