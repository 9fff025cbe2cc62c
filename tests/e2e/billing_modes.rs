//! The three ways charges arise — usage, event-triggered, hybrid — plus pre-debit notices,
//! the daily charge window and merchant time zones, through the public interfaces of the
//! real binary, on SQLite and on PostgreSQL.
use crate::{scenario, support};

use autodebit_domain::{ChargeId, ContractId};
use autodebit_proto::charger::v1::{
    Charge, ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient,
};
use autodebit_proto::contracts::v1::{
    SuspendContractRequest, contracts_service_client::ContractsServiceClient,
    merchants_service_client::MerchantsServiceClient,
};
use autodebit_proto::events::v1::{ChargeMode, Cycle, Money, NoticeKind, PriceTier, UsagePricing};
use autodebit_proto::notifier::v1::{ListNoticesRequest, Notice, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, RecordUsageRequest, RecordUsageResponse, Schedule, TriggerChargeRequest, TriggerChargeResponse,
    TriggerOutcome, scheduler_service_client::SchedulerServiceClient,
};
use scenario::{Merchant, advance_to, authed, create_plan as plan, onboard, sign_on as sign};
use support::{Backend, TestApp, eventually};
use tonic::Code;
use tonic::transport::Channel;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

async fn run(backend: Backend) -> TestApp {
    support::run_on(backend, 0, &["--test-clock"]).await
}

both!(
    usage_is_billed_per_period_under_tiers_with_a_grace_window,
    event_triggered_charges_are_immediate_idempotent_and_limited,
    hybrid_yearly_prepay_with_a_monthly_usage_true_up,
    notices_and_charges_wait_for_the_daily_window,
    merchant_time_zones_and_a_year_of_billing,
);

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

async fn schedule(ch: &Channel, contract: &str) -> Schedule {
    let id = contract.to_string();
    eventually("the schedule", 30, || {
        let (ch, id) = (ch.clone(), id.clone());
        async move {
            SchedulerServiceClient::new(ch)
                .get_schedule(support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()?
                .into_inner()
                .schedule
        }
    })
    .await
}

async fn charge(ch: &Channel, id: &str) -> Option<Charge> {
    let req = GetChargeRequest { charge_id: id.to_string() };
    ChargerServiceClient::new(ch.clone()).get_charge(support::op(req)).await.ok()?.into_inner().charge
}

async fn settled(ch: &Channel, id: &str) -> Charge {
    eventually(&format!("charge {id} to succeed"), 30, || async move {
        charge(ch, id).await.filter(|c| c.state == ChargeState::Succeeded as i32)
    })
    .await
}

fn usage_charge(contract: &str, period: u32) -> String {
    ChargeId::for_usage(ContractId::parse(contract).unwrap(), period).to_string()
}

async fn notices(ch: &Channel, contract: &str, kind: NoticeKind) -> Vec<Notice> {
    let req = ListNoticesRequest { contract_id: contract.into() };
    let all = NotifierServiceClient::new(ch.clone()).list_notices(support::op(req)).await.unwrap().into_inner().notices;
    all.into_iter().filter(|n| n.kind == kind as i32).collect()
}

async fn now_ms(ch: &Channel) -> i64 {
    use autodebit_proto::scheduler::v1::GetSchedulerStatusRequest;
    let status =
        SchedulerServiceClient::new(ch.clone()).get_scheduler_status(support::op(GetSchedulerStatusRequest {})).await;
    status.unwrap().into_inner().now_ms
}

async fn record(
    ch: &Channel,
    m: &Merchant,
    contract: &str,
    quantity: u64,
    unit: &str,
    occurred_at_ms: i64,
    key: &str,
) -> Result<RecordUsageResponse, tonic::Status> {
    let req = RecordUsageRequest {
        contract_id: contract.into(),
        quantity,
        unit: unit.into(),
        occurred_at_ms,
        idempotency_key: key.into(),
    };
    SchedulerServiceClient::new(ch.clone()).record_usage(authed(req, &m.api_key)).await.map(|r| r.into_inner())
}

fn metered(cycle: Cycle) -> UsagePricing {
    // The first 10 minutes of a period are free, the rest 0.50 CNY each.
    UsagePricing {
        unit: "minute".into(),
        tiers: vec![PriceTier { up_to: 10, unit_price: 0 }, PriceTier { up_to: 0, unit_price: 50 }],
        grace_minutes: 60,
        cycle: cycle as i32,
    }
}

async fn usage_is_billed_per_period_under_tiers_with_a_grace_window(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2USE0001").await;
    let daily_usage = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::Usage as i32;
        t.cycle = Cycle::Daily as i32;
        t.usage = Some(metered(Cycle::Daily));
    })
    .await;
    let id = sign(&ch, &m, &daily_usage, "payer-meter", 50_000, Cycle::Daily).await;
    let s = schedule(&ch, &id).await;
    assert_eq!(s.charge_mode, ChargeMode::Usage as i32);
    let (start, end) = (s.anchor_ms, s.next_usage_period_ends_at_ms);
    assert_eq!(end - start, DAY_MS);

    // Bad input names the field and records nothing.
    let bad = record(&ch, &m, &id, 5, "hour", start, "bad-unit").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("unit"), "{bad:?}");
    let bad = record(&ch, &m, &id, 0, "minute", start, "zero").await.unwrap_err();
    assert!(bad.message().contains("quantity"), "{bad:?}");
    let bad = record(&ch, &m, &id, 5, "minute", start + 2 * DAY_MS, "future").await.unwrap_err();
    assert!(bad.message().contains("occurred_at_ms"), "{bad:?}");
    let bad = record(&ch, &m, &id, 5, "minute", start, "").await.unwrap_err();
    assert!(bad.message().contains("idempotency_key"), "{bad:?}");
    let other = onboard(&ch, "91330100MA2USE0002").await;
    let foreign = record(&ch, &other, &id, 5, "minute", start, "foreign").await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    // 25 minutes in period 1; the same key again counts nothing twice.
    let first = record(&ch, &m, &id, 25, "minute", start, "ride-1").await.unwrap();
    assert_eq!((first.period, first.duplicate), (1, false));
    let again = record(&ch, &m, &id, 25, "minute", start, "ride-1").await.unwrap();
    assert_eq!((again.usage_id, again.period, again.duplicate), (first.usage_id.clone(), 1, true));
    assert_eq!(schedule(&ch, &id).await.open_usage_quantity, 25);

    // The notice goes out the lead time (24 h) before the period closes, with the estimate.
    advance_to(&ch, end + HOUR_MS - DAY_MS).await;
    let told = eventually("the usage notice", 30, || async {
        let n = notices(&ch, &id, NoticeKind::PreDebit).await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert!(told[0].text.contains("7.50"), "15 billable minutes at 0.50: {}", told[0].text);

    // Half an hour after the period ends, late usage from it still counts in it; usage of the
    // new period counts in the new one.
    advance_to(&ch, end + HOUR_MS / 2).await;
    let late = record(&ch, &m, &id, 5, "minute", end - 10 * 60_000, "ride-late").await.unwrap();
    assert_eq!(late.period, 1, "inside the grace window");
    let next = record(&ch, &m, &id, 3, "minute", end + 60_000, "ride-2").await.unwrap();
    assert_eq!(next.period, 2);

    // At the close one charge bills the period: 30 minutes, 20 of them at 0.50.
    advance_to(&ch, end + HOUR_MS).await;
    let billed = settled(&ch, &usage_charge(&id, 1)).await;
    assert_eq!(billed.amount.unwrap().minor_units, 1_000);
    // Usage from period 1 reported after its window goes to the next open period.
    let after = record(&ch, &m, &id, 4, "minute", end - 60_000, "ride-very-late").await.unwrap();
    assert_eq!(after.period, 2, "after the grace window: the next period");

    // Period 2 has 7 minutes, all free: no notice, no charge, and billing moves on.
    let end2 = end + DAY_MS;
    advance_to(&ch, end2 - HOUR_MS).await;
    advance_to(&ch, end2 + 2 * HOUR_MS).await;
    eventually("the usage period to move on", 30, || async {
        (schedule(&ch, &id).await.next_usage_period == 3).then_some(())
    })
    .await;
    assert!(charge(&ch, &usage_charge(&id, 2)).await.is_none(), "nothing billable, nothing charged");
    assert_eq!(notices(&ch, &id, NoticeKind::PreDebit).await.len(), 1);
}

async fn event_triggered_charges_are_immediate_idempotent_and_limited(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2TRG0001").await;
    let rides = plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let id = sign(&ch, &m, &rides, "payer-rider", 50_000, Cycle::Monthly).await;
    schedule(&ch, &id).await;
    let mut scheduler = SchedulerServiceClient::new(ch.clone());
    let req = |fen: i64, reason: &str, key: &str| TriggerChargeRequest {
        contract_id: id.clone(),
        amount: cny(fen),
        reason: reason.into(),
        idempotency_key: key.into(),
    };

    // A ride ends: charged at once, and the same call again is the same charge.
    let first = scheduler.trigger_charge(authed(req(350, "骑行结束 12 分钟", "ride-9"), &m.api_key)).await.unwrap();
    let first = first.into_inner();
    assert_eq!((first.outcome, first.duplicate), (TriggerOutcome::Scheduled as i32, false));
    let again = scheduler.trigger_charge(authed(req(350, "骑行结束 12 分钟", "ride-9"), &m.api_key)).await.unwrap();
    let again = again.into_inner();
    assert_eq!(again, TriggerChargeResponse { duplicate: true, ..first.clone() }, "the first answer again");
    let done = settled(&ch, &first.charge_id).await;
    assert_eq!(done.amount.unwrap().minor_units, 350);
    let conflict = scheduler.trigger_charge(authed(req(999, "x", "ride-9"), &m.api_key)).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    // Bad input names the field; a caller without a key, or with another merchant's, gets nothing.
    let e = scheduler.trigger_charge(authed(req(350, "", "ride-10"), &m.api_key)).await.unwrap_err();
    assert!(e.message().contains("reason"), "{e:?}");
    let e = scheduler.trigger_charge(authed(req(0, "x", "ride-10"), &m.api_key)).await.unwrap_err();
    assert!(e.message().contains("amount"), "{e:?}");
    let e = scheduler.trigger_charge(req(350, "x", "ride-10")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let other = onboard(&ch, "91330100MA2TRG0002").await;
    // Its key reaches the scheduler's key table through the log.
    p.caught_up().await;
    let e = scheduler.trigger_charge(authed(req(350, "x", "ride-10"), &other.api_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A fixed-cycle contract is not charged on demand.
    let fixed = sign(&ch, &m, &m.plan_id, "payer-fixed", 1_000, Cycle::Monthly).await;
    schedule(&ch, &fixed).await;
    let mut wrong = req(350, "x", "ride-11");
    wrong.contract_id = fixed;
    let e = scheduler.trigger_charge(authed(wrong, &m.api_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // At 23:00 Beijing time a ride is admitted (and counted) but held for the charge window —
    // WeChat Pay deducts only between 07:00 and 22:00 — and goes to the provider at 07:00.
    let t0 = now_ms(&ch).await;
    advance_to(&ch, t0 + 13 * HOUR_MS).await;
    let night = scheduler.trigger_charge(authed(req(200, "夜间骑行", "ride-night"), &m.api_key)).await.unwrap();
    let night = night.into_inner();
    assert_eq!(night.outcome, TriggerOutcome::Scheduled as i32);
    assert_eq!(night.charge_at_ms, t0 + 21 * HOUR_MS, "the next 07:00");
    let again = scheduler.trigger_charge(authed(req(200, "夜间骑行", "ride-night"), &m.api_key)).await.unwrap();
    let again = again.into_inner();
    assert_eq!((again.duplicate, again.charge_at_ms), (true, night.charge_at_ms));
    p.settled().await;
    assert!(charge(&ch, &night.charge_id).await.is_none(), "held overnight");
    advance_to(&ch, night.charge_at_ms).await;
    assert_eq!(settled(&ch, &night.charge_id).await.amount.unwrap().minor_units, 200);
    // Asked again once it went, the answer is still the first one.
    let later = scheduler.trigger_charge(authed(req(200, "夜间骑行", "ride-night"), &m.api_key)).await.unwrap();
    assert_eq!(later.into_inner(), TriggerChargeResponse { duplicate: true, ..night.clone() });

    // Suspended: the trigger is answered, and recorded, as a refused charge.
    ContractsServiceClient::new(ch.clone())
        .suspend_contract(authed(
            SuspendContractRequest { contract_id: id.clone(), reason: "payer asked".into(), ..Default::default() },
            &m.api_key,
        ))
        .await
        .unwrap();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let refused = eventually("the schedule to stop", 30, || async {
        // A new key each try: a repeated key would repeat the first answer.
        let key = format!("ride-s-{}", attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let r = SchedulerServiceClient::new(ch.clone())
            .trigger_charge(authed(req(350, "骑行结束", &key), &m.api_key))
            .await
            .ok()?
            .into_inner();
        (r.outcome == TriggerOutcome::Rejected as i32).then_some(r)
    })
    .await;
    assert_eq!(refused.rule, "contract_state");
    let stored = eventually("the refusal", 30, || async { charge(&ch, &refused.charge_id).await }).await;
    assert_eq!(stored.state, ChargeState::Rejected as i32);
}

async fn hybrid_yearly_prepay_with_a_monthly_usage_true_up(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2HYB0001").await;
    // 1,200.00 CNY a year, paid at signing, with 100 GB a month included and 2.00 CNY per GB
    // beyond, settled monthly.
    let hybrid = plan(&ch, &m, |t| {
        t.charge_mode = ChargeMode::Hybrid as i32;
        t.cycle = Cycle::Yearly as i32;
        t.amount = cny(120_000);
        t.per_charge_cap = cny(200_000);
        t.first_charge_at_signing = true;
        t.service_period_days = 366;
        t.validity_days = 396;
        t.usage = Some(UsagePricing {
            unit: "GB".into(),
            tiers: vec![PriceTier { up_to: 100, unit_price: 0 }, PriceTier { up_to: 0, unit_price: 200 }],
            grace_minutes: 0,
            cycle: 0,
        });
    })
    .await;
    let id = sign(&ch, &m, &hybrid, "payer-hybrid", 120_000, Cycle::Yearly).await;
    let prepaid = settled(&ch, &scenario::charge_id(&id, 0)).await;
    assert_eq!(prepaid.amount.unwrap().minor_units, 120_000);

    let s = schedule(&ch, &id).await;
    assert_eq!((s.charge_mode, s.next_period, s.next_usage_period), (ChargeMode::Hybrid as i32, 1, 1));
    assert!(s.next_due_at_ms - s.anchor_ms >= 365 * DAY_MS, "the next prepayment is a year away");
    let month_end = s.next_usage_period_ends_at_ms;
    assert!((28 * DAY_MS..=31 * DAY_MS).contains(&(month_end - s.anchor_ms)), "monthly usage periods by default");

    advance_to(&ch, s.anchor_ms + 2 * DAY_MS).await;
    record(&ch, &m, &id, 130, "GB", s.anchor_ms + DAY_MS, "day-1").await.unwrap();
    // The default grace window is an hour: notice a day before the close, charge at it.
    let close = month_end + HOUR_MS;
    advance_to(&ch, close - DAY_MS).await;
    eventually("the true-up notice", 30, || async {
        (!notices(&ch, &id, NoticeKind::PreDebit).await.is_empty()).then_some(())
    })
    .await;
    advance_to(&ch, close).await;
    let true_up = settled(&ch, &usage_charge(&id, 1)).await;
    assert_eq!(true_up.amount.unwrap().minor_units, 30 * 200, "30 GB beyond the included 100");
    let after = schedule(&ch, &id).await;
    assert_eq!((after.next_period, after.next_usage_period), (1, 2), "the yearly side waits for its year");
}

async fn notices_and_charges_wait_for_the_daily_window(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2WIN0001").await;
    let daily = plan(&ch, &m, |t| t.cycle = Cycle::Daily as i32).await;
    // The test clock starts at 10:00 Beijing time; sign at 23:00, an hour after the window.
    let t0 = now_ms(&ch).await;
    advance_to(&ch, t0 + 13 * HOUR_MS).await;
    let id = sign(&ch, &m, &daily, "payer-night", 1_000, Cycle::Daily).await;
    let s = schedule(&ch, &id).await;
    let due = s.next_due_at_ms;
    // The notice was due at signing (a day before the charge), but it is night in Beijing.
    advance_to(&ch, t0 + 14 * HOUR_MS).await;
    p.settled().await;
    assert!(notices(&ch, &id, NoticeKind::PreDebit).await.is_empty(), "no notice at midnight");
    // 07:00: the window opens and the notice goes out; the charge waits a full day after it.
    let opens = t0 + 21 * HOUR_MS;
    advance_to(&ch, opens).await;
    let notice = eventually("the morning notice", 30, || async {
        notices(&ch, &id, NoticeKind::PreDebit).await.into_iter().next()
    })
    .await;
    assert!(notice.recorded_at_ms >= opens, "{notice:?}");
    let noticed = schedule(&ch, &id).await;
    assert_eq!(noticed.next_charge_at_ms, opens + DAY_MS);
    // Its due time (23:00) passes in the closed window, and it is not charged.
    advance_to(&ch, due).await;
    p.settled().await;
    assert!(charge(&ch, &scenario::charge_id(&id, 1)).await.is_none(), "charged outside the window");
    advance_to(&ch, opens + DAY_MS).await;
    let charged = settled(&ch, &scenario::charge_id(&id, 1)).await;
    assert_eq!(charged.period, 1);
}

async fn merchant_time_zones_and_a_year_of_billing(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let mut bad = scenario::application("91330100MA2TZN0001");
    bad.time_zone = "Mars/Olympus".into();
    let e = MerchantsServiceClient::new(ch.clone()).apply_merchant(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("time_zone"), "{e:?}");

    let mut london = scenario::application("91330100MA2TZN0002");
    london.time_zone = "Europe/London".into();
    let m = scenario::onboard_with(&ch, london).await;
    let id = sign(&ch, &m, &m.plan_id, "payer-london", 2_000, Cycle::Monthly).await;
    let s = schedule(&ch, &id).await;
    assert_eq!(s.time_zone, "Europe/London");
    // Months are London months: the same local time of day a month on, across daylight saving.
    let tz: chrono_tz::Tz = "Europe/London".parse().unwrap();
    let anchor = chrono::DateTime::from_timestamp_millis(s.anchor_ms).unwrap().with_timezone(&tz);
    let due = chrono::DateTime::from_timestamp_millis(s.next_due_at_ms).unwrap().with_timezone(&tz);
    assert_eq!(due.time(), anchor.time());

    // Advancing the test clock by a year in one step runs a year of billing: it simulates the
    // time in between, twelve notices each a day before its charge, twelve charges.
    advance_to(&ch, s.anchor_ms + 366 * DAY_MS).await;
    for period in 1..=12 {
        settled(&ch, &scenario::charge_id(&id, period)).await;
    }
    // The notices are recorded by the notifier as it follows the log: behind the charges.
    let told = eventually("twelve pre-debit notices", 30, || async {
        let told = notices(&ch, &id, NoticeKind::PreDebit).await;
        (told.len() >= 12).then_some(told)
    })
    .await;
    assert_eq!(told.len(), 12, "{told:?}");
    assert!(charge(&ch, &scenario::charge_id(&id, 13)).await.is_none());
}
