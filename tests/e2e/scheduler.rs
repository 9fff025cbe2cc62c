//! The scheduler's limits and exactly-once issuing, through the public interfaces.
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::charger::v1::{ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient};
use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
use autodebit_proto::events::v1::{ChargeMode, Cycle, Money, PlanTerms};
use autodebit_proto::scheduler::v1::{
    TriggerChargeRequest, TriggerChargeResponse, TriggerOutcome, scheduler_service_client::SchedulerServiceClient,
};
use scenario::{Merchant, authed, onboard, sign_on as sign};
use support::{Process, TestApp, eventually};
use tonic::transport::Channel;

const DAY: i64 = 86_400;

/// A plan of daily cycles, changed as asked.
async fn plan(ch: &Channel, m: &Merchant, change: impl FnOnce(&mut PlanTerms)) -> String {
    scenario::create_plan(ch, m, |t| {
        t.cycle = Cycle::Daily as i32;
        change(t)
    })
    .await
}

async fn charge(ch: &Channel, contract: &str, period: u32) -> Option<autodebit_proto::charger::v1::Charge> {
    get_charge(ch, &scenario::charge_id(contract, period)).await
}

async fn get_charge(ch: &Channel, id: &str) -> Option<autodebit_proto::charger::v1::Charge> {
    let req = GetChargeRequest { charge_id: id.to_string() };
    ChargerServiceClient::new(ch.clone()).get_charge(support::op(req)).await.ok()?.into_inner().charge
}

/// Waits for the scheduler to have taken in a freshly signed contract.
async fn known(ch: &Channel, contract: &str) {
    use autodebit_proto::scheduler::v1::GetScheduleRequest;
    eventually("the scheduler to know the contract", 20, || {
        let (ch, id) = (ch.clone(), contract.to_string());
        async move {
            SchedulerServiceClient::new(ch).get_schedule(support::op(GetScheduleRequest { contract_id: id })).await.ok()
        }
    })
    .await;
}

/// TriggerCharge with the merchant's key.
async fn trigger(ch: &Channel, m: &Merchant, contract: &str, fen: i64, key: &str) -> TriggerChargeResponse {
    let req = TriggerChargeRequest {
        contract_id: contract.into(),
        amount: Some(Money { minor_units: fen, currency: "CNY".into() }),
        reason: "骑行结束".into(),
        idempotency_key: key.into(),
    };
    SchedulerServiceClient::new(ch.clone()).trigger_charge(authed(req, &m.api_key)).await.unwrap().into_inner()
}

/// The platform on a test clock, the simulator declining as asked.
async fn start(declines: &str, hard_declines: &str) -> TestApp {
    TestApp::spawn(&["--test-clock", "--decline-basis-points", declines, "--hard-decline-basis-points", hard_declines])
        .await
}

async fn advance(ch: &Channel, seconds: i64) {
    AdminServiceClient::new(ch.clone()).advance_clock(support::op(AdvanceClockRequest { seconds })).await.unwrap();
}

#[tokio::test]
async fn limits_are_checked_when_a_charge_is_issued() {
    let p = start("0", "0").await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2LIM0001").await;

    // First charge at signing, when the plan says so.
    let upfront = plan(&ch, &m, |t| t.first_charge_at_signing = true).await;
    let prepaid = sign(&ch, &m, &upfront, "payer-upfront", 500, Cycle::Daily).await;
    let first = eventually("the charge at signing", 20, || {
        let ch = ch.clone();
        let id = prepaid.clone();
        async move { charge(&ch, &id, 0).await.filter(|c| c.state == ChargeState::Succeeded as i32) }
    })
    .await;
    assert_eq!(first.amount.unwrap().minor_units, 500);

    // Two charges a day at most: five rides ending at once, charged concurrently, give two
    // charges and three refusals naming the rule — the limit holds under concurrency.
    let two_a_day = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.daily_count_limit = 2;
    })
    .await;
    let counted = sign(&ch, &m, &two_a_day, "payer-count", 1_000, Cycle::Daily).await;
    known(&ch, &counted).await;
    let keys: Vec<String> = (0..5).map(|i| format!("ride-{i}")).collect();
    let answers = futures::future::join_all(keys.iter().map(|k| trigger(&ch, &m, &counted, 300, k))).await;
    let outcome = |a: &TriggerChargeResponse| TriggerOutcome::try_from(a.outcome).unwrap();
    assert_eq!(answers.iter().filter(|a| outcome(a) == TriggerOutcome::Scheduled).count(), 2, "{answers:?}");
    let refused: Vec<_> = answers.iter().filter(|a| outcome(a) == TriggerOutcome::Rejected).collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|a| a.rule == "daily_count" && a.detail.contains("limit 2")), "{refused:?}");
    // The refusal is recorded as the charge's outcome, not just answered.
    let stored = get_charge(&ch, &refused[0].charge_id).await.unwrap();
    assert_eq!((stored.state, stored.provider_code.as_str()), (ChargeState::Rejected as i32, "daily_count"));
    // And counted by its rule (at least these three: the tests of this binary share one set of
    // metrics).
    let rejected = autodebit_runtime::metrics::CHARGES_REJECTED;
    assert!(autodebit_runtime::metrics::get(rejected, &[("rule", "daily_count")]) >= 3);

    // At most 500.00 CNY a day: two 200.00 charges, then the third is refused.
    let capped = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.daily_amount_limit = Some(Money { minor_units: 50_000, currency: "CNY".into() });
    })
    .await;
    let amount = sign(&ch, &m, &capped, "payer-amount", 20_000, Cycle::Daily).await;
    known(&ch, &amount).await;
    let mut by_amount = Vec::new();
    for i in 0..3 {
        by_amount.push(trigger(&ch, &m, &amount, 20_000, &format!("order-{i}")).await);
    }
    let outcomes: Vec<_> = by_amount.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        vec![TriggerOutcome::Scheduled, TriggerOutcome::Scheduled, TriggerOutcome::Rejected],
        "two 200.00 charges fit in 500.00 a day, a third does not"
    );
    assert_eq!(by_amount[2].rule, "daily_amount");
    assert!(by_amount[2].detail.contains("50000"), "{}", by_amount[2].detail);
    // Above the plan's per-charge cap (500.00 CNY).
    let over = trigger(&ch, &m, &counted, 5_000_000, "too-much").await;
    assert_eq!((outcome(&over), over.rule.as_str()), (TriggerOutcome::Rejected, "per_charge_cap"));

    // A new calendar day (Beijing) starts a new count.
    p.advance_seconds(DAY).await;
    let next_day = trigger(&ch, &m, &counted, 300, "ride-next-day").await;
    assert_eq!(outcome(&next_day), TriggerOutcome::Scheduled, "{next_day:?}");

    // Analytics counts the refusals: nothing is dropped silently.
    let analytics = AnalyticsServiceClient::new(ch.clone());
    eventually("analytics to count refusals", 20, || {
        let mut a = analytics.clone();
        async move {
            let s = a.get_summary(support::op(GetSummaryRequest {})).await.ok()?.into_inner();
            // Every issued charge reaches an outcome, refusals included.
            (s.charges_rejected >= 5
                && s.charges_scheduled == s.charges_succeeded + s.charges_failed + s.charges_rejected)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn nothing_is_charged_past_a_contracts_validity() {
    let p = start("0", "0").await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2VAL0001").await;
    let short = plan(&ch, &m, |t| {
        t.service_period_days = 3;
        t.validity_days = 5;
    })
    .await;
    let id = sign(&ch, &m, &short, "payer-short", 100, Cycle::Daily).await;
    for day in 1..=4u32 {
        assert_eq!(scenario::bill_next_period(&ch, &id).await, day);
        eventually("the day's charge", 20, || {
            let ch = ch.clone();
            let id = id.clone();
            async move { charge(&ch, &id, day).await.filter(|c| c.state == ChargeState::Succeeded as i32) }
        })
        .await;
    }
    p.advance_seconds(4 * DAY).await;
    p.settled().await;
    for period in 6..=8 {
        assert!(charge(&ch, &id, period).await.is_none(), "period {period} was charged past the contract's validity");
    }
}

/// Two scheduler processes on one PostgreSQL log issue every due charge exactly once (`autodebit
/// serve`, one process per service).
#[tokio::test]
async fn two_scheduler_replicas_issue_each_charge_once() {
    let url = autodebit_eventstore::testing::fresh_postgres_url().await;
    let serve = |svc: &str| {
        Process::start(&["serve", svc, "--database-url", &url, "--test-clock", "--decline-basis-points", "0"])
    };
    let contracts = serve("contracts");
    let schedulers = [serve("scheduler"), serve("scheduler")];
    let charger = serve("charger");
    let ch = contracts.channel().await;
    let m = onboard(&ch, "91330100MA2TWO0001").await;
    let daily = plan(&ch, &m, |_| {}).await;
    const CONTRACTS: usize = 40;
    const DAYS: i64 = 6;
    let mut ids = Vec::new();
    for i in 0..CONTRACTS {
        ids.push(sign(&ch, &m, &daily, &format!("payer-{i}"), 100, Cycle::Daily).await);
    }
    let store = autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(&url)).await.unwrap();
    // Let both replicas see every schedule, then move time so all of them race for the work.
    eventually("every schedule", 30, || {
        let store = store.clone();
        async move {
            let n = store.query("SELECT COUNT(*) FROM scheduler_schedules", &[]).await.ok()?;
            (n[0].i64(0)? == CONTRACTS as i64).then_some(())
        }
    })
    .await;
    let sched = schedulers[0].channel().await;
    let count = |event: &'static str, at_least: i64| {
        let store = store.clone();
        async move {
            let n = store.query("SELECT COUNT(*) FROM events WHERE event_type = $1", &[event.into()]).await.ok()?;
            (n[0].i64(0)? >= at_least).then_some(())
        }
    };
    // Each day the replicas issue the day's charges and the next day's pre-debit notices;
    // the clock moves on once they have, as a ticking clock would.
    for day in 0..DAYS {
        eventually("the next period's notices", 30, || count("PreDebitNoticeIssued", CONTRACTS as i64 * (day + 1)))
            .await;
        advance(&sched, DAY).await;
        eventually("the day's charges", 30, || count("ChargeScheduled", CONTRACTS as i64 * (day + 1))).await;
    }
    let expected = CONTRACTS as i64 * DAYS;
    eventually("every due charge issued", 60, || {
        let store = store.clone();
        async move {
            let n = store.query("SELECT COUNT(*) FROM events WHERE event_type = 'ChargeScheduled'", &[]).await.ok()?;
            (n[0].i64(0)? >= expected).then_some(())
        }
    })
    .await;
    scenario::scheduler_idle(&sched).await;
    let total = store.query("SELECT COUNT(*) FROM events WHERE event_type = 'ChargeScheduled'", &[]).await.unwrap();
    assert_eq!(total[0].i64(0), Some(expected), "exactly one charge per contract and period");
    let twice = store
        .query(
            "SELECT stream FROM events WHERE event_type = 'ChargeScheduled' GROUP BY stream HAVING COUNT(*) > 1",
            &[],
        )
        .await
        .unwrap();
    assert!(twice.is_empty(), "charges issued twice: {twice:?}");
    let charger = charger.channel().await;
    for id in &ids {
        assert!(charge(&charger, id, DAYS as u32).await.is_some(), "the last period of {id}");
    }
}

/// A declined charge is tried again on the plan's schedule (6 h, then 24 h), never sooner;
/// the third failure in a row suspends the contract and the retries stop.
#[tokio::test]
async fn failed_charges_are_retried_on_schedule_and_three_failures_suspend() {
    use autodebit_proto::contracts::v1::{ContractState, GetContractRequest};
    let p = start("10000", "0").await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2RTY0001").await;
    let monthly = plan(&ch, &m, |t| t.cycle = Cycle::Monthly as i32).await;
    let id = sign(&ch, &m, &monthly, "payer-broke", 1_000, Cycle::Monthly).await;
    let attempt = |n: u32| {
        let (ch, id) = (ch.clone(), id.clone());
        async move {
            eventually(&format!("attempt {n} to fail"), 20, || {
                let (ch, id) = (ch.clone(), id.clone());
                async move {
                    charge(&ch, &id, 1).await.filter(|c| c.attempt == n && c.state == ChargeState::Failed as i32)
                }
            })
            .await
        }
    };

    scenario::bill_next_period(&ch, &id).await;
    let first = attempt(1).await;
    assert_eq!(first.provider_code, "NOTENOUGH");
    // Five hours later: too soon to try again.
    p.advance_seconds(5 * 3_600).await;
    p.settled().await;
    assert_eq!(charge(&ch, &id, 1).await.unwrap().attempt, 1, "no retry within six hours");
    p.advance_seconds(3_600 + 60).await;
    attempt(2).await;
    // The plan's second gap is a day.
    p.advance_seconds(23 * 3_600).await;
    p.settled().await;
    assert_eq!(charge(&ch, &id, 1).await.unwrap().attempt, 2, "no third attempt before 24 h");
    p.advance_seconds(3_600 + 60).await;
    attempt(3).await;

    let mut contracts = ContractsServiceClient::new(ch.clone());
    let suspended = eventually("the contract to be suspended", 20, || {
        let mut c = contracts.clone();
        let id = id.clone();
        let key = m.api_key.clone();
        async move {
            let got = c
                .get_contract(authed(
                    GetContractRequest { contract_id: id, merchant_contract_code: String::new() },
                    &key,
                ))
                .await
                .ok()?
                .into_inner()
                .contract?;
            (got.state == ContractState::Suspended as i32).then_some(got)
        }
    })
    .await;
    assert!(suspended.suspension_reason.contains("3 consecutive failed charges"), "{}", suspended.suspension_reason);
    p.advance_seconds(3 * DAY).await;
    p.settled().await;
    assert_eq!(charge(&ch, &id, 1).await.unwrap().attempt, 3, "retries stop with the suspension");
    let _ = &mut contracts;
}

/// A hard decline (the contract is gone at the provider) is never retried.
#[tokio::test]
async fn hard_declines_are_not_retried() {
    let p = start("10000", "10000").await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2HRD0001").await;
    let monthly = plan(&ch, &m, |t| t.cycle = Cycle::Monthly as i32).await;
    let id = sign(&ch, &m, &monthly, "payer-gone", 1_000, Cycle::Monthly).await;
    scenario::bill_next_period(&ch, &id).await;
    let failed = eventually("the hard decline", 20, || {
        let (ch, id) = (ch.clone(), id.clone());
        async move { charge(&ch, &id, 1).await.filter(|c| c.state == ChargeState::Failed as i32) }
    })
    .await;
    assert_eq!(failed.provider_code, "CONTRACT_NOT_EXIST");
    p.advance_seconds(2 * DAY).await;
    p.settled().await;
    let after = charge(&ch, &id, 1).await.unwrap();
    assert_eq!((after.attempt, after.state), (1, ChargeState::Failed as i32), "a hard decline is final");
}
