//! Crash safety of the charger against the mock WeChat Pay: thousands of charges in flight,
//! the platform killed with SIGKILL at random moments and restarted on the same database.
//! Checked at the mock: no charge debited twice, every debit recorded by the platform, and
//! every charge at an outcome.
//! The platform runs as the real binary (`support::Process`): the test kills it.
use crate::{scenario, support};

use autodebit_domain::ChargeId;
use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
use autodebit_proto::scheduler::v1::{GetSchedulerStatusRequest, scheduler_service_client::SchedulerServiceClient};
use futures::StreamExt;
use scenario::{OPERATOR_KEY, authed, onboard, sign_request};
use std::collections::HashMap;
use std::time::Duration;
use support::{MockWechatpay, Process, eventually, http_get};

const CONTRACTS: usize = 3_000;
const KILLS: usize = 5;

/// The mock with its default account; some deductions answered SYSTEMERROR (half of those
/// taken all the same), some USERPAYING (settled later), some declined for funds.
fn mock() -> MockWechatpay {
    MockWechatpay::start(&[
        "--systemerror-basis-points",
        "500",
        "--notenough-basis-points",
        "300",
        "--userpaying-basis-points",
        "300",
        "--seed",
        "11",
    ])
}

/// A small deterministic generator for the kill moments; the seed is printed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Deductions the mock has seen so far.
/// Charges at an outcome so far, as the projections have it (they may lag a little).
async fn settled(p: &Process) -> u64 {
    let req = authed(GetSummaryRequest::default(), OPERATOR_KEY);
    let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{}", p.grpc)).unwrap().connect().await else {
        return 0;
    };
    match AnalyticsServiceClient::new(ch).get_summary(req).await {
        Ok(s) => {
            let s = s.into_inner();
            s.charges_succeeded + s.charges_failed
        }
        Err(_) => 0,
    }
}

async fn orders_at(mock: &MockWechatpay) -> u64 {
    let (_, body) = http_get(mock.1, "/mock/orders").await;
    serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|b| b["orders"].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_it_never_debits_twice_and_settles_every_charge() {
    let mock = mock();
    let dir = tempfile::tempdir().unwrap();
    let http = support::free_port().to_string();
    let data = dir.path().join("data");
    let base = ["run", "--data-dir", data.to_str().unwrap(), "--test-clock", "--charge-window", "00:00-24:00"];

    // Onboard and sign on the simulator; then point the merchant at WeChat Pay.
    let p = Process::start_at(&base, &http);
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2CRASH01").await;
    let contracts = ContractsServiceClient::new(ch.clone());
    futures::stream::iter(0..CONTRACTS)
        .map(|i| {
            let mut c = contracts.clone();
            let req =
                authed(sign_request(&merchant, &format!("payer-{i}"), 1_000 + (i % 90) as i64 * 10), OPERATOR_KEY);
            async move { c.sign_contract(req).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let scheduler = SchedulerServiceClient::new(ch.clone());
    eventually("every schedule", 60, || {
        let mut s = scheduler.clone();
        async move {
            let st = s.get_scheduler_status(authed(GetSchedulerStatusRequest {}, OPERATOR_KEY)).await.ok()?;
            (st.into_inner().active_schedules as usize == CONTRACTS).then_some(())
        }
    })
    .await;
    drop(p);

    let config = dir.path().join("wechatpay.json");
    mock.write_config(&config, &merchant.merchant_id, &format!("http://{http}/callbacks/wechatpay/v2/deduction"));
    let mut args = base.to_vec();
    args.extend_from_slice(&["--wechatpay-config", config.to_str().unwrap()]);

    // A month on: every contract's charge falls due. Kill the platform while they are charged.
    let mut p = Process::start_at(&args, &http);
    AdminServiceClient::new(p.channel().await)
        .advance_clock(authed(AdvanceClockRequest { seconds: 32 * 86_400 }, OPERATOR_KEY))
        .await
        .unwrap();
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("kill seed {seed}");
    let mut mid_run = 0;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(100 + next(&mut seed) % 1_200)).await;
        let settled = settled(&p).await;
        let sent = orders_at(&mock).await;
        drop(p); // SIGKILL
        println!("killed with {sent} of {CONTRACTS} deductions sent, {settled} settled");
        if sent > 0 && settled < CONTRACTS as u64 {
            mid_run += 1;
        }
        p = Process::start_at(&args, &http);
    }
    assert!(mid_run >= 2, "only {mid_run} kills fell while charges were in flight");

    // Every charge reaches an outcome.
    let ch = p.channel().await;
    let summary = eventually("every charge at an outcome", 180, || {
        let mut a = AnalyticsServiceClient::new(ch.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.charges_succeeded + s.charges_failed >= CONTRACTS as u64).then_some(s)
        }
    })
    .await;
    assert_eq!(summary.charges_succeeded + summary.charges_failed, CONTRACTS as u64, "{summary:?}");

    // At the mock: each charge debited at most once, and every debit is one the platform recorded.
    let (status, body) = http_get(mock.1, "/mock/orders").await;
    assert_eq!(status, 200, "{body}");
    let book: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut per_charge: HashMap<ChargeId, u32> = HashMap::new();
    for no in book["debited_orders"].as_array().unwrap() {
        let (charge, _) = ChargeId::from_out_trade_no(no.as_str().unwrap()).expect("an order number of ours");
        *per_charge.entry(charge).or_default() += 1;
    }
    let twice: Vec<_> = per_charge.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "charges debited more than once: {twice:?}");
    assert_eq!(
        book["debited"].as_u64().unwrap(),
        summary.charges_succeeded,
        "debits the platform did not record: {book}"
    );
    let fen: i64 = summary.succeeded_minor_units_by_currency.get("CNY").copied().unwrap_or(0);
    assert_eq!(book["debited_fen"].as_i64().unwrap(), fen);
    // Every charge's pre-debit notice reached WeChat Pay too (one sent again counts once).
    eventually("every pre-debit notice at the mock", 120, || async {
        let (_, body) = http_get(mock.1, "/mock/orders").await;
        let book: serde_json::Value = serde_json::from_str(&body).ok()?;
        (book["notices"].as_u64()? == CONTRACTS as u64).then_some(())
    })
    .await;
    println!(
        "{} charges: {} succeeded, {} failed; mock: {} requests, {} callbacks delivered, re-applied orders {}",
        CONTRACTS,
        summary.charges_succeeded,
        summary.charges_failed,
        book["requests"],
        book["callbacks_delivered"],
        book["applied_more_than_once"].as_array().map_or(0, Vec::len)
    );
}
