//! `autodebit run`: all five services in one process on SQLite, driven over gRPC and HTTP.
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, GetClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::contracts::v1::{
    ContractState, GetContractRequest, TerminateContractRequest, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{Money, TerminationMode};
use autodebit_proto::scheduler::v1::{GetScheduleRequest, scheduler_service_client::SchedulerServiceClient};
use scenario::{Endpoints, OPERATOR_KEY, authed, onboard, sign_request};
use support::{Process, eventually, http_get};
use tonic::Code;

fn run(dir: &std::path::Path, extra: &[&str]) -> Process {
    let mut args = vec!["run", "--data-dir", dir.to_str().unwrap(), "--decline-basis-points", "0"];
    args.extend_from_slice(extra);
    Process::start(&args)
}

#[tokio::test]
async fn sign_advance_one_cycle_charge_succeeds_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = run(dir.path(), &["--test-clock"]);
    let ch = p.channel().await;
    let e = Endpoints {
        contracts: ch.clone(),
        scheduler: ch.clone(),
        charger: ch.clone(),
        notifier: ch.clone(),
        analytics: ch,
    };
    scenario::sign_advance_charge(&e).await;
}

#[tokio::test]
async fn bad_input_unknown_ids_and_version_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let p = run(dir.path(), &["--test-clock"]);
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2BAD0001").await;
    let mut c = ContractsServiceClient::new(ch);
    // Without a plan, the platform's own cap applies.
    let sign_request = |payer: &str, fen: i64| {
        let mut r = sign_request(&m, payer, fen);
        r.plan_id = String::new();
        r
    };

    let cases: Vec<(autodebit_proto::contracts::v1::SignContractRequest, &str)> = vec![
        (
            {
                let mut r = sign_request("p1", 100);
                r.merchant_id = String::new();
                r
            },
            "merchant_id",
        ),
        (
            {
                let mut r = sign_request("p1", 100);
                r.payer_id = "has space".into();
                r
            },
            "payer_id",
        ),
        (
            {
                let mut r = sign_request("p1", 100);
                r.amount_per_cycle = None;
                r
            },
            "amount_per_cycle",
        ),
        (sign_request("p1", 0), "amount_per_cycle.minor_units"),
        (sign_request("p1", 5_000_001), "amount_per_cycle.minor_units"),
        (
            {
                let mut r = sign_request("p1", 100);
                r.amount_per_cycle = Some(Money { minor_units: 100, currency: "yuan".into() });
                r
            },
            "amount_per_cycle",
        ),
        (
            {
                let mut r = sign_request("p1", 100);
                r.cycle = 0;
                r
            },
            "cycle",
        ),
        (
            {
                let mut r = sign_request("p1", 100);
                r.cycle = 99;
                r
            },
            "cycle",
        ),
    ];
    for (req, field) in cases {
        let err = c.sign_contract(authed(req, OPERATOR_KEY)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "message {:?} names {field}", err.message());
    }
    // The 50,000 CNY cap itself is allowed.
    c.sign_contract(authed(sign_request("p1", 5_000_000), OPERATOR_KEY)).await.unwrap();
    // With the plan, the plan's cap (500.00 CNY) applies.
    let mut over_plan = scenario::sign_request(&m, "p1", 50_001);
    over_plan.payer_id = "p9".into();
    let err = c.sign_contract(authed(over_plan, OPERATOR_KEY)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("amount_per_cycle"), "{}", err.message());
    // Without credentials nothing happens.
    let err = c.sign_contract(sign_request("p1", 100)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let get = |id: &str| {
        authed(GetContractRequest { contract_id: id.into(), merchant_contract_code: String::new() }, OPERATOR_KEY)
    };
    let err = c.get_contract(get("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("contract_id"));
    let unknown = "ct_00000000000000000000000000000000".to_string();
    let err = c.get_contract(get(&unknown)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .terminate_contract(authed(
            TerminateContractRequest {
                contract_id: unknown,
                mode: TerminationMode::Payer as i32,
                remark: String::new(),
                expected_version: None,
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let signed =
        c.sign_contract(authed(sign_request("p2", 100), OPERATOR_KEY)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(signed.version, 1);
    let terminate = |expected_version, mode| {
        authed(
            TerminateContractRequest {
                contract_id: signed.contract_id.clone(),
                mode,
                remark: "user asked".into(),
                expected_version,
            },
            &m.api_key,
        )
    };
    let err = c.terminate_contract(terminate(Some(1), 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("mode"));
    let err = c.terminate_contract(terminate(Some(7), TerminationMode::Payer as i32)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a stale expected_version is a conflict");
    // Nothing was half-written by the refused calls.
    let still = c.get_contract(get(&signed.contract_id)).await.unwrap().into_inner();
    assert_eq!(still.contract.unwrap().state, ContractState::Active as i32);

    let done = c.terminate_contract(terminate(Some(1), TerminationMode::Payer as i32)).await.unwrap().into_inner();
    let done = done.contract.unwrap();
    assert_eq!(done.state, ContractState::Terminated as i32);
    assert_eq!(done.version, 2);
    assert_eq!(done.termination_remark, "user asked");
    let err = c.terminate_contract(terminate(None, TerminationMode::Merchant as i32)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "termination is final");

    let mut admin = AdminServiceClient::new(p.channel().await);
    let err = admin.advance_clock(support::op(AdvanceClockRequest { seconds: 0 })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("seconds"));
}

#[tokio::test]
async fn idempotent_signing_and_termination_stops_billing() {
    let dir = tempfile::tempdir().unwrap();
    let p = run(dir.path(), &["--test-clock"]);
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2IDE0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let mut req = sign_request(&m, "p-idem", 990);
    req.idempotency_key = "order-42".into();
    let a = c.sign_contract(authed(req.clone(), OPERATOR_KEY)).await.unwrap().into_inner().contract.unwrap();
    let b = c.sign_contract(authed(req.clone(), OPERATOR_KEY)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(a.contract_id, b.contract_id, "a repeated request returns the original contract");
    let mut different = req.clone();
    different.amount_per_cycle = Some(Money { minor_units: 991, currency: "CNY".into() });
    assert_eq!(c.sign_contract(authed(different, OPERATOR_KEY)).await.unwrap_err().code(), Code::AlreadyExists);
    // Repeats sent at once: one contract, and every one of them gets it.
    let mut raced = sign_request(&m, "p-race", 990);
    raced.idempotency_key = "order-43".into();
    let answers = futures::future::join_all((0..8).map(|_| {
        let mut c = c.clone();
        let req = authed(raced.clone(), OPERATOR_KEY);
        async move { c.sign_contract(req).await.unwrap().into_inner().contract.unwrap().contract_id }
    }))
    .await;
    assert!(answers.iter().all(|id| *id == answers[0]), "{answers:?}");
    assert_ne!(answers[0], a.contract_id);

    let mut s = SchedulerServiceClient::new(ch.clone());
    eventually("the schedule", 30, || {
        let mut s = s.clone();
        let id = a.contract_id.clone();
        async move { s.get_schedule(support::op(GetScheduleRequest { contract_id: id })).await.ok() }
    })
    .await;
    c.terminate_contract(authed(
        TerminateContractRequest {
            contract_id: a.contract_id.clone(),
            mode: TerminationMode::Merchant as i32,
            remark: String::new(),
            expected_version: None,
        },
        &m.api_key,
    ))
    .await
    .unwrap();
    eventually("the schedule to stop", 30, || {
        let mut s = s.clone();
        let id = a.contract_id.clone();
        async move {
            let sch =
                s.get_schedule(support::op(GetScheduleRequest { contract_id: id })).await.ok()?.into_inner().schedule?;
            (!sch.active).then_some(())
        }
    })
    .await;
    let mut admin = AdminServiceClient::new(ch.clone());
    admin.advance_clock(support::op(AdvanceClockRequest { seconds: 90 * 86_400 })).await.unwrap();
    scenario::scheduler_idle(&ch).await;
    p.caught_up().await;
    let sch = s
        .get_schedule(support::op(GetScheduleRequest { contract_id: a.contract_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sch.schedule.unwrap().next_period, 1, "a terminated contract is never charged");
}

#[tokio::test]
async fn health_reflection_http_and_restart() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let p = run(dir.path(), &[]);
    let ch = p.channel().await;

    let mut health = HealthClient::new(ch.clone());
    for svc in [
        "",
        "autodebit.contracts.v1.ContractsService",
        "autodebit.contracts.v1.MerchantsService",
        "autodebit.contracts.v1.PlansService",
        "autodebit.scheduler.v1.SchedulerService",
        "autodebit.charger.v1.ChargerService",
        "autodebit.notifier.v1.NotifierService",
        "autodebit.analytics.v1.AnalyticsService",
    ] {
        let r = health.check(HealthCheckRequest { service: svc.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{svc}");
    }

    // What `grpcurl list` asks.
    let mut reflection = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(futures::stream::iter(vec![req])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in ["contracts", "scheduler", "charger", "notifier", "analytics"] {
        let full = format!("autodebit.{svc}.v1.{}Service", svc[..1].to_uppercase() + &svc[1..]);
        assert!(names.contains(&full), "{full} not in {names:?}");
    }
    assert!(names.contains(&"grpc.health.v1.Health".to_string()));

    // Without --test-clock the clock cannot be moved.
    let mut admin = AdminServiceClient::new(ch.clone());
    assert_eq!(admin.get_clock(support::op(GetClockRequest {})).await.unwrap_err().code(), Code::Unimplemented);

    assert_eq!(http_get(p.http, "/healthz").await.0, 200);
    assert_eq!(http_get(p.http, "/readyz").await.0, 200);
    let m = onboard(&ch, "91330100MA2RST0001").await;
    let mut c = ContractsServiceClient::new(ch);
    let signed = c
        .sign_contract(authed(sign_request(&m, "p-restart", 100), OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    let (status, metrics) = http_get(p.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("autodebit_grpc_requests_total"), "{metrics}");
    assert!(metrics.contains("# TYPE autodebit_grpc_requests_total counter"), "{metrics}");
    // Every follower's lag, the projections' among them.
    assert!(metrics.contains("# TYPE autodebit_follower_lag_ms gauge"), "{metrics}");
    assert!(metrics.contains("autodebit_follower_lag_ms{follower=\"analytics.projections\"}"), "{metrics}");
    // Prometheus exposition: every series under a `# HELP` and a `# TYPE` of its family.
    for series in metrics.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name = series.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| metrics.contains(&format!("# TYPE {f} histogram"))))
            .unwrap_or(name);
        assert!(metrics.contains(&format!("# HELP {family} ")), "no HELP for {series}");
        assert!(metrics.contains(&format!("# TYPE {family} ")), "no TYPE for {series}");
    }

    // SIGTERM stops it cleanly; a restart on the same directory keeps the contract.
    drop((c, admin, reflection, health));
    assert!(p.terminate().success());
    let p = run(dir.path(), &[]);
    let mut c = ContractsServiceClient::new(p.channel().await);
    let again = c
        .get_contract(authed(
            GetContractRequest { contract_id: signed.contract_id.clone(), merchant_contract_code: String::new() },
            &m.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.contract.unwrap().payer_id, "p-restart");
}
