//! One error mapping, as a client finds it: undecodable requests and impossible values are the
//! caller's fault (`INVALID_ARGUMENT`, naming the field once), and an internal failure answers
//! an opaque id that the log also holds, never database text.
use crate::{scenario, support};

use autodebit_proto::charger::v1::{RefundChargeRequest, charger_service_client::ChargerServiceClient};
use autodebit_proto::contracts::v1::{ModifyContractRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{Cycle, Money};
use scenario::{OPERATOR_KEY, authed, charge_id, onboard, sign_on};
use support::call_raw;
use tonic::Code;

#[tokio::test]
async fn bad_requests_are_the_callers_fault_and_name_their_field_once() {
    let p = support::TestApp::spawn(&["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2ERRORS1").await;

    // Bytes that are no protobuf message.
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    let err = call_raw(&ch, "/autodebit.contracts.v1.ContractsService/GetContract", garbage, Some(&m.api_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // The clock cannot be moved past what time can hold.
    let max = {
        use prost::Message;
        autodebit_proto::admin::v1::AdvanceClockRequest { seconds: i64::MAX }.encode_to_vec()
    };
    let err =
        call_raw(&ch, "/autodebit.admin.v1.AdminService/AdvanceClock", max, Some(OPERATOR_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("seconds: "), "{}", err.message());

    // Above the cap: the field once, the contract's own currency.
    let contract = sign_on(&ch, &m, &m.plan_id, "payer-e", 1_000, Cycle::Monthly).await;
    let err = ContractsServiceClient::new(ch.clone())
        .modify_contract(authed(
            ModifyContractRequest {
                contract_id: contract.clone(),
                amount_per_cycle: Some(Money { minor_units: 60_000, currency: "CNY".into() }),
                cycle: Cycle::Unspecified as i32,
                ..Default::default()
            },
            &m.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("amount_per_cycle: 600.00 CNY is above"), "{}", err.message());
    assert_eq!(err.message().matches("amount_per_cycle").count(), 1, "{}", err.message());
    let mut import = scenario::sign_request(&m, "payer-usd", 6_000_000);
    import.amount_per_cycle = Some(Money { minor_units: 6_000_000, currency: "USD".into() });
    let err = ContractsServiceClient::new(ch.clone()).sign_contract(authed(import, OPERATOR_KEY)).await.unwrap_err();
    assert!(err.message().contains("USD") && !err.message().contains("CNY"), "{}", err.message());

    // A refund of a charge that never succeeded: the field once.
    let err = ChargerServiceClient::new(ch.clone())
        .refund_charge(authed(
            RefundChargeRequest {
                charge_id: charge_id(&contract, 1),
                amount: Some(Money { minor_units: 0, currency: "CNY".into() }),
                reason: "r".into(),
                idempotency_key: "k".into(),
            },
            &m.api_key,
        ))
        .await
        .unwrap_err();
    assert!(!err.message().contains("amount: amount"), "{}", err.message());
}

/// The real binary: the details are looked for in its log.
#[tokio::test]
async fn an_internal_failure_answers_an_id_and_logs_the_details() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["run", "--data-dir", dir.path().to_str().unwrap(), "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--operator-key", OPERATOR_KEY])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let grpc = line.split_whitespace().find_map(|w| w.strip_prefix("grpc=")).unwrap().to_string();
    let ch = tonic::transport::Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    // The notices table goes missing under the running process.
    let url = format!("sqlite://{}", dir.path().join("autodebit.db").display());
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TABLE notifier_notices").execute(&db).await.unwrap();
    let contract = autodebit_domain::ContractId::generate().to_string();
    let req = {
        use prost::Message;
        autodebit_proto::notifier::v1::ListNoticesRequest { contract_id: contract }.encode_to_vec()
    };
    let err =
        call_raw(&ch, "/autodebit.notifier.v1.NotifierService/ListNotices", req, Some(OPERATOR_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(!err.message().contains("notifier_notices") && !err.message().contains("table"), "{}", err.message());
    let id =
        err.message().split_whitespace().find(|w| w.starts_with("err_")).expect("an error id").trim_end_matches(':');
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    let logged = log.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} is not in the log:\n{log}"));
    assert!(logged.contains("notifier_notices"), "{logged}");
}
