//! Deny by default, as a caller finds it: every method the server lists through reflection is
//! called with no key, a revoked key and another merchant's key. Only `ApplyMerchant` answers
//! without a valid key, and another merchant's objects are answered exactly as objects that
//! do not exist.
use crate::{scenario, support};

use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, RefundChargeRequest, charger_service_client::ChargerServiceClient,
};
use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, IssueApiKeyRequest, RevokeApiKeyRequest,
    contracts_service_client::ContractsServiceClient, merchants_service_client::MerchantsServiceClient,
};
use autodebit_proto::events::v1::{Cycle, Money, SigningChannel};
use autodebit_proto::notifier::v1::{
    CreateWebhookEndpointRequest, ListWebhookDeliveriesRequest, webhooks_service_client::WebhooksServiceClient,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value as Field};
use scenario::{OPERATOR_KEY, authed, bill_next_period, charge_id, onboard, sign_on};
use support::{TestApp, eventually};
use tonic::Code;
use tonic::transport::Channel;

/// Every method of every service the server lists, described by what reflection returns.
async fn reflected_methods(ch: &Channel) -> Vec<MethodDescriptor> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(ch.clone());
    let ask = |m: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let names = support::listed_services(ch).await;
    let mut files = std::collections::BTreeMap::new();
    let mut asks: Vec<_> = names.iter().map(|n| ask(MessageRequest::FileContainingSymbol(n.clone()))).collect();
    // Then the files they import, by name, until nothing is missing.
    while !asks.is_empty() {
        let mut answers = client.server_reflection_info(tokio_stream::iter(asks)).await.unwrap().into_inner();
        while let Some(a) = answers.message().await.unwrap() {
            if let Some(MessageResponse::FileDescriptorResponse(f)) = a.message_response {
                for raw in f.file_descriptor_proto {
                    let file = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
                    files.insert(file.name().to_string(), file);
                }
            }
        }
        let missing: std::collections::BTreeSet<String> =
            files.values().flat_map(|f| f.dependency.clone()).filter(|d| !files.contains_key(d)).collect();
        asks = missing.into_iter().map(|d| ask(MessageRequest::FileByFilename(d))).collect();
    }
    // Each file after the files it imports.
    let mut pool = DescriptorPool::new();
    while !files.is_empty() {
        let ready: Vec<String> = files
            .iter()
            .filter(|(_, f)| f.dependency.iter().all(|d| pool.get_file_by_name(d).is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        assert!(!ready.is_empty(), "reflection left out imports of {:?}", files.keys());
        for n in ready {
            pool.add_file_descriptor_proto(files.remove(&n).unwrap()).unwrap();
        }
    }
    let methods: Vec<MethodDescriptor> = names
        .iter()
        .filter_map(|n| pool.get_service_by_name(n))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(methods.len() >= 31, "reflection listed only {} methods: {names:?}", methods.len());
    methods
}

/// The ids a request names, by field.
struct Ids {
    merchant_id: String,
    plan_id: String,
    contract_id: String,
    charge_id: String,
    refund_id: String,
    session_id: String,
    endpoint_id: String,
    delivery_id: String,
}

impl Ids {
    fn all(&self) -> [&str; 8] {
        [
            &self.merchant_id,
            &self.plan_id,
            &self.contract_id,
            &self.charge_id,
            &self.refund_id,
            &self.session_id,
            &self.endpoint_id,
            &self.delivery_id,
        ]
    }

    /// Ids of the same shapes that name nothing.
    fn nobody() -> Ids {
        let contract = autodebit_domain::ContractId::generate().to_string();
        let charge = charge_id(&contract, 1);
        Ids {
            merchant_id: format!("mch_{}", uuid::Uuid::new_v4().simple()),
            plan_id: format!("pl_{}", uuid::Uuid::now_v7().simple()),
            refund_id: format!(
                "rf_{}_{}",
                charge.trim_start_matches("ch_"),
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            ),
            contract_id: contract,
            charge_id: charge,
            session_id: format!("ss_{}", uuid::Uuid::now_v7().simple()),
            endpoint_id: format!("we_{}", uuid::Uuid::now_v7().simple()),
            delivery_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// `method`'s request with every id field it has set from `ids`.
fn request(method: &MethodDescriptor, ids: &Ids) -> Vec<u8> {
    let mut m = DynamicMessage::new(method.input());
    for (field, value) in [
        ("merchant_id", &ids.merchant_id),
        ("plan_id", &ids.plan_id),
        ("contract_id", &ids.contract_id),
        ("charge_id", &ids.charge_id),
        ("refund_id", &ids.refund_id),
        ("session_id", &ids.session_id),
        ("endpoint_id", &ids.endpoint_id),
        ("delivery_id", &ids.delivery_id),
    ] {
        if let Some(f) = method.input().get_field_by_name(field) {
            m.set_field(&f, Field::String(value.clone()));
        }
    }
    m.encode_to_vec()
}

/// Calls `method` with `body` as `key` (none: no authorization header).
async fn call(
    ch: &Channel,
    method: &MethodDescriptor,
    body: Vec<u8>,
    key: Option<&str>,
) -> Result<Vec<u8>, tonic::Status> {
    support::call_raw(ch, &format!("/{}/{}", method.parent_service().full_name(), method.name()), body, key).await
}

/// Code and message of an answer, with the ids it names masked.
fn shape(answer: &Result<Vec<u8>, tonic::Status>, ids: &Ids) -> (Code, String) {
    match answer {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => {
            let mut msg = s.message().to_string();
            for id in ids.all() {
                msg = msg.replace(id, "<id>");
                msg = msg.replace(id.split_once('_').map(|(_, rest)| rest).unwrap_or(id), "<id>");
            }
            (s.code(), msg)
        }
    }
}

#[tokio::test]
async fn every_method_denies_by_default() {
    let p = TestApp::spawn(&["--test-clock", "--decline-basis-points", "0", "--allow-loopback-webhooks"]).await;
    let ch = p.channel().await;

    // Merchant A has one of everything; merchant B has a key, a revoked key and nothing else.
    let a = onboard(&ch, "91330100MA2AUTHAAA").await;
    let b = onboard(&ch, "91330100MA2AUTHBBB").await;
    // A webhook endpoint of A's, which the charge below gives a delivery (to a closed port; its
    // retry is not due before the test ends, so the endpoint stays enabled).
    let mut hooks = WebhooksServiceClient::new(ch.clone());
    let endpoint = hooks
        .create_webhook_endpoint(authed(
            CreateWebhookEndpointRequest {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: vec!["charge.succeeded".into()],
                description: String::new(),
            },
            &a.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap()
        .endpoint_id;
    let contract = sign_on(&ch, &a, &a.plan_id, "payer-a", 1_990, Cycle::Monthly).await;
    let period = bill_next_period(&ch, &contract).await;
    let charge = charge_id(&contract, period);
    let mut charger = ChargerServiceClient::new(ch.clone());
    eventually("A's charge to succeed", 30, || {
        let (mut c, id) = (charger.clone(), charge.clone());
        async move {
            let got = c.get_charge(authed(GetChargeRequest { charge_id: id }, OPERATOR_KEY)).await.ok()?;
            (got.into_inner().charge?.state == ChargeState::Succeeded as i32).then_some(())
        }
    })
    .await;
    let refund = charger
        .refund_charge(authed(
            RefundChargeRequest {
                charge_id: charge.clone(),
                amount: Some(Money { minor_units: 100, currency: "CNY".into() }),
                reason: "asked".into(),
                idempotency_key: "r1".into(),
            },
            &a.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap()
        .refund_id;
    let session = ContractsServiceClient::new(ch.clone())
        .create_signing_session(authed(
            CreateSigningSessionRequest {
                plan_id: a.plan_id.clone(),
                payer_id: "payer-a2".into(),
                channel: SigningChannel::H5 as i32,
                device_id: "dev-a".into(),
                client_ip: "192.0.2.10".into(),
                return_url: "https://example.cn/done".into(),
                ..Default::default()
            },
            &a.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let mut merchants = MerchantsServiceClient::new(ch.clone());
    let spare = merchants
        .issue_api_key(authed(IssueApiKeyRequest { label: "spare".into() }, &b.api_key))
        .await
        .unwrap()
        .into_inner();
    merchants.revoke_api_key(authed(RevokeApiKeyRequest { key_id: spare.key_id.clone() }, &b.api_key)).await.unwrap();
    let revoked = spare.api_key;
    let delivery = eventually("A's webhook delivery", 30, || {
        let (mut h, id, key) = (hooks.clone(), endpoint.clone(), a.api_key.clone());
        async move {
            let req = ListWebhookDeliveriesRequest { endpoint_id: id, limit: 0 };
            let list = h.list_webhook_deliveries(authed(req, &key)).await.ok()?.into_inner().deliveries;
            list.into_iter().next().map(|d| d.delivery_id)
        }
    })
    .await;
    let theirs = Ids {
        merchant_id: a.merchant_id.clone(),
        plan_id: a.plan_id.clone(),
        contract_id: contract.clone(),
        charge_id: charge.clone(),
        refund_id: refund,
        session_id: session,
        endpoint_id: endpoint,
        delivery_id: delivery,
    };
    // The revocation reaches every service's key table through the log.
    let methods = reflected_methods(&ch).await;
    for m in methods.iter().filter(|m| {
        m.name() == "GetSchedule" || m.name() == "GetSummary" || m.name() == "ListNotices" || m.name() == "GetCharge"
    }) {
        eventually("the revocation to reach every service", 30, || {
            let (ch, m, body) = (ch.clone(), m.clone(), request(m, &theirs));
            let revoked = revoked.clone();
            async move {
                (call(&ch, &m, body, Some(&revoked)).await.err()?.code() == Code::Unauthenticated).then_some(())
            }
        })
        .await;
    }

    let mut checked = 0;
    for m in methods.iter().filter(|m| m.parent_service().full_name().starts_with("autodebit.")) {
        let name = format!("{}/{}", m.parent_service().full_name(), m.name());
        let public = m.name() == "ApplyMerchant";
        for (who, key) in
            [("no key", None), ("a revoked key", Some(revoked.as_str())), ("a made-up key", Some("adk_key_0000_ffff"))]
        {
            let got = call(&ch, m, request(m, &theirs), key).await;
            if public {
                assert_ne!(got.as_ref().err().map(|e| e.code()), Some(Code::Unauthenticated), "{name} with {who}");
            } else {
                let code = got.as_ref().err().map(|e| e.code());
                assert_eq!(code, Some(Code::Unauthenticated), "{name} with {who}: {got:?}");
            }
        }
        // Another merchant: A's objects are answered as ids that name nothing are.
        let nobody = Ids::nobody();
        let on_theirs = call(&ch, m, request(m, &theirs), Some(&b.api_key)).await;
        let on_nothing = call(&ch, m, request(m, &nobody), Some(&b.api_key)).await;
        let names_an_id = [
            "merchant_id",
            "plan_id",
            "contract_id",
            "charge_id",
            "refund_id",
            "session_id",
            "endpoint_id",
            "delivery_id",
        ]
        .iter()
        .any(|f| m.input().get_field_by_name(f).is_some());
        if names_an_id && !matches!(m.name(), "IssueApiKey" | "CreatePlan" | "ApplyMerchant") {
            assert_eq!(
                shape(&on_theirs, &theirs),
                shape(&on_nothing, &nobody),
                "{name}: B learns that A's object exists"
            );
            // A list filtered by A's ids holds nothing of A's: the same as filtered by nothing.
            if let (Ok(x), Ok(y)) = (&on_theirs, &on_nothing) {
                assert_eq!(x, y, "{name}: B's answer differs for A's ids");
            }
        }
        checked += 1;
    }
    assert!(checked >= 31, "{checked}");

    // A reads its own objects with its key; B's summary and A's differ.
    for name in [
        "GetContract",
        "GetCharge",
        "GetPlan",
        "GetSigningSession",
        "GetMerchant",
        "ListNotices",
        "GetSchedule",
        "GetRefund",
        "ListWebhookEndpoints",
        "ListWebhookDeliveries",
        "RedeliverWebhook",
        "RotateWebhookSecret",
    ] {
        let m = methods.iter().find(|m| m.name() == name).unwrap();
        let got = call(&ch, m, request(m, &theirs), Some(&a.api_key)).await;
        assert!(got.is_ok(), "{name} with A's own key: {got:?}");
    }
    // Operator-only and merchant-only methods refuse the other kind of caller.
    let by_name = |n: &str| methods.iter().find(|m| m.name() == n).unwrap().clone();
    let got = call(&ch, &by_name("AdvanceClock"), vec![8, 60], Some(&a.api_key)).await;
    assert_eq!(got.unwrap_err().code(), Code::PermissionDenied);
    let got = call(&ch, &by_name("ListContracts"), vec![], Some(OPERATOR_KEY)).await;
    assert_eq!(got.unwrap_err().code(), Code::PermissionDenied);
    // Webhook endpoints are a merchant's own: the operator has none to manage.
    for name in [
        "CreateWebhookEndpoint",
        "ListWebhookEndpoints",
        "UpdateWebhookEndpoint",
        "DeleteWebhookEndpoint",
        "RotateWebhookSecret",
        "ListWebhookDeliveries",
        "RedeliverWebhook",
        "GetNotifierSettings",
        "SetNotifierSettings",
        "ListNoticeTemplates",
        "SetNoticeTemplate",
    ] {
        let m = by_name(name);
        let got = call(&ch, &m, request(&m, &theirs), Some(OPERATOR_KEY)).await;
        assert_eq!(got.map(|_| ()).unwrap_err().code(), Code::PermissionDenied, "{name} with the operator key");
    }
    // What reflection lists and the audience table are the same set of methods: nothing served
    // is left out of the table (and so refused to everyone), nothing in it is not served.
    let served: std::collections::BTreeSet<String> = methods
        .iter()
        .filter(|m| m.parent_service().full_name().starts_with("autodebit."))
        .map(|m| format!("{}/{}", m.parent_service().full_name(), m.name()))
        .collect();
    let table: std::collections::BTreeSet<String> = autodebit_runtime::auth::AUDIENCES
        .iter()
        .map(|(m, _)| m.to_string())
        .filter(|m| m.starts_with("autodebit."))
        .collect();
    assert_eq!(served, table);
    let summary = |key: String| {
        let m = by_name("GetSummary");
        let ch = ch.clone();
        async move {
            let raw = call(&ch, &m, vec![], Some(&key)).await.unwrap();
            autodebit_proto::analytics::v1::GetSummaryResponse::decode(raw.as_slice()).unwrap()
        }
    };
    let (of_a, of_b, all) =
        (summary(a.api_key.clone()).await, summary(b.api_key.clone()).await, summary(OPERATOR_KEY.into()).await);
    assert_eq!(of_a.contracts_active, 1);
    assert_eq!(
        (of_b.contracts_active, of_b.charges_scheduled, of_b.notices_recorded, of_b.events_projected),
        (0, 0, 0, 0)
    );
    assert!(of_a.notices_recorded >= 2, "{of_a:?}");
    assert!(all.events_projected > 0 && all.contracts_active == 1, "{all:?}");
}

/// A generated operator key goes to a file only its owner can read, never to the log (the real
/// binary's, on stderr).
#[test]
fn a_generated_operator_key_is_written_to_a_private_file_not_logged() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args([
            "run",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("AUTODEBIT_OPERATOR_KEY")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("listening"), "{first}");
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    let path = dir.path().join("operator-key");
    let key = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(key.len() >= 32, "{key}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!log.contains(&key), "the key reached the log:\n{log}");
    assert!(log.contains(path.to_str().unwrap()), "the key file's path is not logged:\n{log}");
}
