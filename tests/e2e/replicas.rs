//! Scale-out as `deploy/` runs it: two replicas of every service (`autodebit serve <svc>`, ten
//! processes) on one PostgreSQL database, charging 10,000 contracts through the mock WeChat Pay
//! (which answers some deductions ambiguously), with one replica of each service killed with
//! SIGKILL mid-run. The survivors take over: the followers' leases are PostgreSQL session locks,
//! freed the moment the killed process's connections drop, and the attempts the killed charger
//! had in flight are asked about once their 30 s lease (`worker::attempts::LEASE`) runs out.
//! Checked at the end: every charge debited at most once at the mock and once in the log, every
//! debit recorded, and the projections' counts equal to the log's (no event applied twice).
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
use autodebit_proto::scheduler::v1::{GetSchedulerStatusRequest, scheduler_service_client::SchedulerServiceClient};
use futures::StreamExt;
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use std::collections::HashMap;
use std::time::Instant;
use support::{MockWechatpay, Process, eventually, http_get};

const CHARGES: usize = 10_000;
const SERVICES: [&str; 5] = ["contracts", "scheduler", "charger", "notifier", "analytics"];

async fn mock_book(mock: &MockWechatpay) -> serde_json::Value {
    let (_, body) = http_get(mock.1, "/mock/orders").await;
    serde_json::from_str(&body).unwrap_or_default()
}

/// A fault run of five to seven minutes whose ten processes take most of PostgreSQL's default 100
/// connections, so it is kept out of the default test command (other PostgreSQL tests running
/// beside it would be refused connections):
/// `cargo test --test e2e replicas -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a fault run of ten processes, five to seven minutes: cargo test --test e2e replicas -- --ignored"]
async fn two_replicas_of_each_service_charge_exactly_once_with_one_of_each_killed() {
    let mock = MockWechatpay::start(&[
        "--systemerror-basis-points",
        "300",
        "--userpaying-basis-points",
        "300",
        "--seed",
        "17",
    ]);
    let url = autodebit_eventstore::testing::fresh_postgres_url().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wechatpay.json");
    let serve = |svc: &str, extra: &[&str]| {
        // Ten processes, each with its pool, its listener and its followers' leases, within
        // PostgreSQL's 100 connections.
        let mut args = vec![
            "serve",
            svc,
            "--database-url",
            &url,
            "--test-clock",
            "--charge-window",
            "00:00-24:00",
            "--db-pool",
            "5",
        ];
        args.extend_from_slice(extra);
        Process::start(&args)
    };

    // The merchant first (its id goes into the WeChat Pay configuration), then the rest.
    let contracts = [serve("contracts", &[]), serve("contracts", &[])];
    let merchant = onboard(&contracts[0].channel().await, "91330100MA2REPL001").await;
    mock.write_config(&config, &merchant.merchant_id, "http://127.0.0.1:9/callbacks/wechatpay/v2/deduction");
    let wechatpay = ["--wechatpay-config", config.to_str().unwrap()];
    let mut replicas: HashMap<&str, Vec<Process>> = HashMap::new();
    replicas.insert("contracts", contracts.into());
    for svc in &SERVICES[1..] {
        let extra: &[&str] = if *svc == "charger" { &wechatpay } else { &[] };
        replicas.insert(svc, vec![serve(svc, extra), serve(svc, extra)]);
    }

    // Contracts signed through both contracts replicas.
    let signers = [
        ContractsServiceClient::new(replicas["contracts"][0].channel().await),
        ContractsServiceClient::new(replicas["contracts"][1].channel().await),
    ];
    // Ten debug-built processes share two cores: a call may run out of time. Each contract has
    // its idempotency key, so asking again never signs it twice.
    futures::stream::iter(0..CHARGES)
        .map(|i| {
            let signers = signers.clone();
            let mut request = sign_request(&merchant, &format!("payer-{i}"), 1_000 + (i % 90) as i64 * 10);
            request.idempotency_key = format!("replicas-{i}");
            async move {
                for attempt in 0.. {
                    let mut c = signers[(i + attempt) % 2].clone();
                    match c.sign_contract(authed(request.clone(), OPERATOR_KEY)).await {
                        Ok(_) => return,
                        Err(e) if attempt < 5 => eprintln!("signing contract {i} again: {e}"),
                        Err(e) => panic!("contract {i} not signed: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let survivor = replicas["scheduler"][1].channel().await;
    eventually("every schedule", 120, || {
        let mut s = SchedulerServiceClient::new(survivor.clone());
        async move {
            let st = s.get_scheduler_status(authed(GetSchedulerStatusRequest {}, OPERATOR_KEY)).await.ok()?;
            (st.into_inner().active_schedules as usize == CHARGES).then_some(())
        }
    })
    .await;

    // A month on, every contract falls due; once a third of the deductions have been sent, one
    // replica of each service dies.
    AdminServiceClient::new(replicas["scheduler"][0].channel().await)
        .advance_clock(authed(AdvanceClockRequest { seconds: 32 * 86_400 }, OPERATOR_KEY))
        .await
        .unwrap();
    eventually("a third of the deductions sent", 300, || async {
        (mock_book(&mock).await["orders"].as_u64()? as usize >= CHARGES / 3).then_some(())
    })
    .await;
    let sent_at_kill = mock_book(&mock).await["orders"].as_u64().unwrap_or(0);
    for svc in SERVICES {
        drop(replicas.get_mut(svc).unwrap().remove(0)); // SIGKILL
    }
    let killed_at = Instant::now();
    println!("one replica of each killed with {sent_at_kill} of {CHARGES} deductions sent");

    // The survivors finish the run.
    let analytics = replicas["analytics"][0].channel().await;
    let summary = eventually("every charge at its outcome", 600, || {
        let mut a = AnalyticsServiceClient::new(analytics.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.charges_succeeded + s.charges_failed >= CHARGES as u64).then_some(s)
        }
    })
    .await;
    println!("the survivors finished the run {} s after the kill", killed_at.elapsed().as_secs());
    assert_eq!(summary.charges_scheduled, CHARGES as u64, "{summary:?}");
    assert_eq!(summary.charges_succeeded + summary.charges_failed, CHARGES as u64, "{summary:?}");
    // (The mock declines a few for funds: failed, and not retried within the run's frozen day.)
    let succeeded = summary.charges_succeeded;
    assert!(succeeded > CHARGES as u64 * 9 / 10, "{summary:?}");

    // At the mock: no charge debited twice, every debit one the platform recorded.
    let book = mock_book(&mock).await;
    let mut per_charge: HashMap<autodebit_domain::ChargeId, u32> = HashMap::new();
    for no in book["debited_orders"].as_array().unwrap() {
        let (charge, _) =
            autodebit_domain::ChargeId::from_out_trade_no(no.as_str().unwrap()).expect("an order of ours");
        *per_charge.entry(charge).or_default() += 1;
    }
    assert!(per_charge.values().all(|n| *n == 1), "charges debited more than once");
    assert_eq!(per_charge.len() as u64, succeeded, "every debit is a charge the platform recorded as succeeded");

    // In the log: one outcome per charge; and the projections count what the log holds.
    let store =
        autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(url.as_str())).await.unwrap();
    let count = |sql: &'static str| {
        let store = store.clone();
        async move { store.query(sql, &[]).await.unwrap()[0].i64(0).unwrap() }
    };
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM (SELECT stream FROM events WHERE event_type IN ('ChargeSucceeded', 'ChargeFailed')
             GROUP BY stream HAVING COUNT(*) > 1) t"
        )
        .await,
        0,
        "a charge with two outcomes in the log"
    );
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE event_type = 'ChargeSucceeded'").await, succeeded as i64);
    let notices = count("SELECT COUNT(*) FROM events WHERE event_type = 'NoticeRecorded'").await;
    let summary = eventually("the projections caught up", 120, || {
        let mut a = AnalyticsServiceClient::new(analytics.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.notices_recorded as i64 >= notices).then_some(s)
        }
    })
    .await;
    assert_eq!(summary.notices_recorded as i64, notices, "the projector counted a notice twice");
    assert_eq!(summary.charges_succeeded, succeeded, "the projector counted a charge twice");
    // Every pre-debit notice reached WeChat Pay (one sent again counts once).
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let notices = mock_book(&mock).await["notices"].as_u64().unwrap_or(0) as usize;
        if notices == CHARGES {
            break;
        }
        assert!(Instant::now() < deadline, "{notices} of {CHARGES} pre-debit notices reached the mock");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
