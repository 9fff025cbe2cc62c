//! What a contract modification does to its billing, and what a suspended merchant may do,
//! through the public interfaces of the real binary on a test clock, on SQLite and on
//! PostgreSQL.
use crate::{scenario, support};

use autodebit_domain::Cycle as DomainCycle;
use autodebit_domain::clock::from_millis;
use autodebit_proto::charger::v1::{
    Charge, ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient,
};
use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, ModifyContractRequest, ReviewAction, ReviewMerchantRequest,
    contracts_service_client::ContractsServiceClient, merchants_service_client::MerchantsServiceClient,
};
use autodebit_proto::events::v1::{ChargeMode, Cycle, ModificationRule, Money, NoticeKind, SigningChannel};
use autodebit_proto::notifier::v1::{ListNoticesRequest, Notice, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, Schedule, TriggerChargeRequest, TriggerOutcome,
    scheduler_service_client::SchedulerServiceClient,
};
use scenario::{Merchant, OPERATOR_KEY, advance_to, authed, charge_id, create_plan, onboard, sign_on as sign};
use support::{Backend, TestApp, eventually};
use tonic::Code;
use tonic::transport::Channel;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

both!(
    an_amount_change_at_once_bills_the_next_charge,
    an_amount_change_from_the_next_cycle_leaves_the_cycle_under_way,
    monthly_to_quarterly_reanchors_on_the_last_charge,
    monthly_to_weekly_starts_a_week_on_without_a_burst,
    an_announced_charge_goes_out_as_announced,
    notices_name_times_in_the_merchants_zone,
    a_suspended_merchant_neither_signs_nor_charges,
);

async fn run(backend: Backend) -> TestApp {
    support::run_on(backend, 0, &["--test-clock"]).await
}

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

/// A monthly plan whose changes take effect at once.
async fn immediate_plan(ch: &Channel, m: &Merchant) -> String {
    create_plan(ch, m, |t| t.modification_rule = ModificationRule::Immediately as i32).await
}

/// The contract's schedule once `ready` holds for it.
async fn schedule_when(ch: &Channel, contract: &str, what: &str, ready: impl Fn(&Schedule) -> bool) -> Schedule {
    eventually(what, 30, || {
        let (ch, id) = (ch.clone(), contract.to_string());
        let ready = &ready;
        async move {
            let s = SchedulerServiceClient::new(ch)
                .get_schedule(support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()?
                .into_inner()
                .schedule?;
            ready(&s).then_some(s)
        }
    })
    .await
}

async fn charge(ch: &Channel, contract: &str, period: u32) -> Option<Charge> {
    let req = GetChargeRequest { charge_id: charge_id(contract, period) };
    ChargerServiceClient::new(ch.clone()).get_charge(support::op(req)).await.ok()?.into_inner().charge
}

/// Period `period`'s charge once it has an outcome.
async fn outcome(ch: &Channel, contract: &str, period: u32) -> Charge {
    eventually(&format!("an outcome for period {period}"), 30, || async move {
        charge(ch, contract, period).await.filter(|c| c.state != ChargeState::Scheduled as i32)
    })
    .await
}

/// Period `period`'s charge once it succeeded; returns its amount.
async fn charged(ch: &Channel, contract: &str, period: u32) -> i64 {
    let c = outcome(ch, contract, period).await;
    assert_eq!(c.state, ChargeState::Succeeded as i32, "period {period}: {c:?}");
    c.amount.unwrap().minor_units
}

async fn modify(ch: &Channel, m: &Merchant, contract: &str, fen: i64, cycle: Cycle) {
    let req = ModifyContractRequest {
        contract_id: contract.into(),
        amount_per_cycle: cny(fen),
        cycle: cycle as i32,
        expected_version: None,
    };
    ContractsServiceClient::new(ch.clone()).modify_contract(authed(req, &m.api_key)).await.unwrap();
}

async fn notices(ch: &Channel, contract: &str, kind: NoticeKind, n: usize) -> Vec<Notice> {
    eventually(&format!("{n} notices of kind {kind:?}"), 30, || async move {
        let req = ListNoticesRequest { contract_id: contract.into() };
        let all =
            NotifierServiceClient::new(ch.clone()).list_notices(support::op(req)).await.ok()?.into_inner().notices;
        let of_kind: Vec<Notice> = all.into_iter().filter(|x| x.kind == kind as i32).collect();
        (of_kind.len() >= n).then_some(of_kind)
    })
    .await
}

/// When period `n` of a monthly contract anchored at `anchor_ms` falls due (Beijing calendar).
fn monthly_due(anchor_ms: i64, n: u32) -> i64 {
    DomainCycle::Monthly.due_at(from_millis(anchor_ms), n, &chrono_tz::Asia::Shanghai).unwrap().timestamp_millis()
}

/// A merchant's contract signed now, and its schedule.
async fn signed(ch: &Channel, m: &Merchant, plan: &str, payer: &str) -> (String, Schedule) {
    let id = sign(ch, m, plan, payer, 2_500, Cycle::Monthly).await;
    let s = schedule_when(ch, &id, "the schedule", |_| true).await;
    (id, s)
}

async fn an_amount_change_at_once_bills_the_next_charge(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0001").await;
    let plan = immediate_plan(&ch, &m).await;
    let (id, s) = signed(&ch, &m, &plan, "payer-at-once").await;
    advance_to(&ch, monthly_due(s.anchor_ms, 1) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 1).await, 2_500);

    modify(&ch, &m, &id, 3_000, Cycle::Unspecified).await;
    let s = schedule_when(&ch, &id, "the new amount", |s| s.amount.as_ref().unwrap().minor_units == 3_000).await;
    assert_eq!((s.next_period, s.next_due_at_ms), (2, monthly_due(s.anchor_ms, 2)), "the calendar is kept");
    assert!(s.change_amount.is_none(), "nothing waits");
    let told = notices(&ch, &id, NoticeKind::ContractModified, 1).await;
    assert!(told[0].text.contains("起调整为每月扣款 30.00 CNY"), "{}", told[0].text);

    advance_to(&ch, monthly_due(s.anchor_ms, 2) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 2).await, 3_000);
    let ahead = notices(&ch, &id, NoticeKind::PreDebit, 2).await;
    assert!(ahead.iter().any(|n| n.text.contains("¥30.00")), "announced at the new amount: {ahead:?}");
}

async fn an_amount_change_from_the_next_cycle_leaves_the_cycle_under_way(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0002").await;
    // The onboarding plan keeps the default rule: from the next cycle.
    let (id, s) = signed(&ch, &m, &m.plan_id, "payer-next-cycle").await;
    advance_to(&ch, monthly_due(s.anchor_ms, 1) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 1).await, 2_500);

    // Period 2, due next, still bills the cycle under way: the change waits for it, and the
    // payer is told the date it falls due (its effective time, in the future).
    modify(&ch, &m, &id, 3_000, Cycle::Unspecified).await;
    let s = schedule_when(&ch, &id, "the waiting change", |s| s.change_amount.is_some()).await;
    assert_eq!((s.change_after_period, s.change_amount.as_ref().unwrap().minor_units), (2, 3_000));
    assert_eq!(s.amount.unwrap().minor_units, 2_500);
    let due2 = from_millis(monthly_due(s.anchor_ms, 2)).with_timezone(&chrono_tz::Asia::Shanghai);
    let told = notices(&ch, &id, NoticeKind::ContractModified, 1).await;
    let date = due2.format("%Y-%m-%d 的本期扣款仍按原条款").to_string();
    assert!(told[0].text.contains(&date), "{} should say {date}", told[0].text);

    advance_to(&ch, monthly_due(s.anchor_ms, 3) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 2).await, 2_500);
    assert_eq!(charged(&ch, &id, 3).await, 3_000);
    let s = schedule_when(&ch, &id, "period 4 next", |s| s.next_period == 4).await;
    assert!(s.change_amount.is_none());

    // Quarterly from the next cycle, then, while that waits, a new amount: both after period 4,
    // whose date both notices give; the second change replaces the first, keeping its cycle.
    modify(&ch, &m, &id, 3_000, Cycle::Quarterly).await;
    modify(&ch, &m, &id, 3_500, Cycle::Unspecified).await;
    let s = schedule_when(&ch, &id, "the second change waiting", |s| {
        s.change_amount.as_ref().is_some_and(|a| a.minor_units == 3_500)
    })
    .await;
    assert_eq!((s.change_after_period, s.change_cycle), (4, Cycle::Quarterly as i32));
    let t4 = monthly_due(s.anchor_ms, 4);
    let date = from_millis(t4).with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d 的本期扣款").to_string();
    let told = notices(&ch, &id, NoticeKind::ContractModified, 3).await;
    assert_eq!(told.iter().filter(|n| n.text.contains(&date)).count(), 2, "both should say {date}: {told:?}");
    advance_to(&ch, t4 + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 4).await, 3_000);
    let due5 =
        DomainCycle::Quarterly.due_at(from_millis(t4), 1, &chrono_tz::Asia::Shanghai).unwrap().timestamp_millis();
    let s = schedule_when(&ch, &id, "quarterly from period 4", |s| s.next_period == 5).await;
    assert_eq!((s.next_due_at_ms, s.amount.unwrap().minor_units), (due5, 3_500));
}

async fn monthly_to_quarterly_reanchors_on_the_last_charge(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0003").await;
    let plan = immediate_plan(&ch, &m).await;
    let (id, s) = signed(&ch, &m, &plan, "payer-quarterly").await;
    let t2 = monthly_due(s.anchor_ms, 2);
    advance_to(&ch, t2 + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 1).await, 2_500);
    assert_eq!(charged(&ch, &id, 2).await, 2_500);

    // At period 3: quarterly from the last charge (period 2), not from the signing.
    modify(&ch, &m, &id, 7_000, Cycle::Quarterly).await;
    let s = schedule_when(&ch, &id, "the quarterly calendar", |s| s.cycle == Cycle::Quarterly as i32).await;
    let due3 =
        DomainCycle::Quarterly.due_at(from_millis(t2), 1, &chrono_tz::Asia::Shanghai).unwrap().timestamp_millis();
    assert_eq!((s.next_period, s.next_due_at_ms), (3, due3));

    // Nothing in the months between; period 3 on its quarter day, at the new amount.
    advance_to(&ch, due3 - 2 * DAY_MS).await;
    let s = schedule_when(&ch, &id, "the clock two days before", |s| s.next_period == 3).await;
    assert_eq!(s.noticed_period, 2, "period 3 is not announced yet");
    advance_to(&ch, due3 + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 3).await, 7_000);
    let s = schedule_when(&ch, &id, "period 4 next", |s| s.next_period == 4).await;
    let due4 =
        DomainCycle::Quarterly.due_at(from_millis(t2), 2, &chrono_tz::Asia::Shanghai).unwrap().timestamp_millis();
    assert_eq!(s.next_due_at_ms, due4);
}

async fn monthly_to_weekly_starts_a_week_on_without_a_burst(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0004").await;
    let plan = immediate_plan(&ch, &m).await;
    let (id, s) = signed(&ch, &m, &plan, "payer-weekly").await;
    let t1 = monthly_due(s.anchor_ms, 1);
    advance_to(&ch, t1 + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 1).await, 2_500);

    // Twenty days after the last monthly charge, weekly: the weeks already behind are not
    // charged; the next is the first weekly date from now on, 21 days after period 1.
    advance_to(&ch, t1 + 20 * DAY_MS).await;
    modify(&ch, &m, &id, 600, Cycle::Weekly).await;
    let s = schedule_when(&ch, &id, "the weekly calendar", |s| s.cycle == Cycle::Weekly as i32).await;
    assert_eq!((s.next_period, s.next_due_at_ms), (4, t1 + 21 * DAY_MS));

    // Its notice goes out now and the charge a full lead time later; then weekly.
    advance_to(&ch, t1 + 29 * DAY_MS).await;
    assert_eq!(charged(&ch, &id, 4).await, 600);
    assert_eq!(charged(&ch, &id, 5).await, 600);
    for skipped in [2, 3] {
        assert!(charge(&ch, &id, skipped).await.is_none(), "period {skipped} was skipped, not caught up");
    }
    let s = schedule_when(&ch, &id, "period 6 next", |s| s.next_period == 6).await;
    assert_eq!(s.next_due_at_ms, t1 + 35 * DAY_MS);
}

async fn an_announced_charge_goes_out_as_announced(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0005").await;
    let plan = immediate_plan(&ch, &m).await;
    let (id, s) = signed(&ch, &m, &plan, "payer-announced").await;
    let t2 = monthly_due(s.anchor_ms, 2);
    // Half a day before period 2: charged once, and period 2 announced at 25.00.
    advance_to(&ch, t2 - 12 * HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 1).await, 2_500);
    schedule_when(&ch, &id, "period 2 announced", |s| s.noticed_period == 2).await;

    modify(&ch, &m, &id, 3_000, Cycle::Unspecified).await;
    let s = schedule_when(&ch, &id, "the waiting change", |s| s.change_amount.is_some()).await;
    assert_eq!(s.change_after_period, 2, "the announced period keeps its terms");

    advance_to(&ch, monthly_due(s.anchor_ms, 3) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 2).await, 2_500);
    assert_eq!(charged(&ch, &id, 3).await, 3_000);
    // The notifier takes the last notice in on its own time: wait for it rather than race it.
    let announced = |ahead: &[Notice]| -> Vec<bool> {
        ["¥25.00", "¥30.00"].iter().map(|a| ahead.iter().any(|n| n.text.contains(a))).collect()
    };
    let ahead = eventually("both amounts announced", 30, || async {
        let ahead = notices(&ch, &id, NoticeKind::PreDebit, 2).await;
        (announced(&ahead) == [true, true]).then_some(ahead)
    })
    .await;
    assert_eq!(announced(&ahead), vec![true, true], "each charge announced at what it took: {ahead:?}");
}

async fn notices_name_times_in_the_merchants_zone(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let mut london = scenario::application("91330100MA2MOD0006");
    london.time_zone = "Europe/London".into();
    let m = scenario::onboard_with(&ch, london).await;
    // Signed at 02:00 Beijing time, which is still the evening before in London.
    advance_to(&ch, scenario_now(&ch).await + 16 * HOUR_MS).await;
    let (id, s) = signed(&ch, &m, &m.plan_id, "payer-london").await;
    let tz: chrono_tz::Tz = "Europe/London".parse().unwrap();
    let due1 = from_millis(s.next_due_at_ms).with_timezone(&tz);
    let beijing = from_millis(s.next_due_at_ms).with_timezone(&chrono_tz::Asia::Shanghai);
    assert_ne!(due1.date_naive(), beijing.date_naive(), "the dates differ between the zones");

    advance_to(&ch, s.next_due_at_ms + 12 * HOUR_MS).await;
    let ahead = notices(&ch, &id, NoticeKind::PreDebit, 1).await;
    let when = due1.format("%Y-%m-%d %H:%M (Europe/London)").to_string();
    assert!(ahead[0].text.contains(&when), "{} should name {when}", ahead[0].text);

    modify(&ch, &m, &id, 3_000, Cycle::Unspecified).await;
    let s = schedule_when(&ch, &id, "the waiting change", |s| s.change_amount.is_some()).await;
    let due = from_millis(s.next_due_at_ms).with_timezone(&tz).format("%Y-%m-%d 的本期扣款").to_string();
    let told = notices(&ch, &id, NoticeKind::ContractModified, 1).await;
    assert!(told[0].text.contains(&due), "{} should say {due}", told[0].text);
}

/// The platform clock.
async fn scenario_now(ch: &Channel) -> i64 {
    use autodebit_proto::scheduler::v1::GetSchedulerStatusRequest;
    let status =
        SchedulerServiceClient::new(ch.clone()).get_scheduler_status(support::op(GetSchedulerStatusRequest {})).await;
    status.unwrap().into_inner().now_ms
}

async fn review(ch: &Channel, m: &Merchant, action: ReviewAction) {
    let req = ReviewMerchantRequest {
        merchant_id: m.merchant_id.clone(),
        action: action as i32,
        reason: "退款率过高".into(),
    };
    MerchantsServiceClient::new(ch.clone()).review_merchant(authed(req, OPERATOR_KEY)).await.unwrap();
}

async fn a_suspended_merchant_neither_signs_nor_charges(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2MOD0007").await;
    let (id, s) = signed(&ch, &m, &m.plan_id, "payer-suspended").await;
    let rides = create_plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let (ride, _) = signed(&ch, &m, &rides, "payer-rides").await;

    let session = CreateSigningSessionRequest {
        plan_id: m.plan_id.clone(),
        payer_id: "payer-new".into(),
        channel: SigningChannel::H5 as i32,
        device_id: "phone-1".into(),
        client_ip: "192.0.2.10".into(),
        return_url: "https://merchant.example/done".into(),
        ..Default::default()
    };
    let opened = ContractsServiceClient::new(ch.clone())
        .create_signing_session(authed(session.clone(), &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();

    review(&ch, &m, ReviewAction::Suspend).await;
    schedule_when(&ch, &id, "the scheduler to know of the suspension", |s| s.merchant_suspended).await;
    // No signing session opens, and one opened before cannot be confirmed.
    let page = opened.authorization_url.split_once(&p.http.to_string()).unwrap().1.to_string();
    let (_, html) = support::http_get(p.http, &page).await;
    let code = support::element_text(&html, "code-hint").expect("the simulator's code");
    assert_eq!(support::http_post(p.http, &format!("{page}/tick"), "agree=yes").await.0, 303);
    let (status, body) = support::http_post(p.http, &format!("{page}/confirm"), &format!("code={code}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("suspended"), "{body}");
    let refused = ContractsServiceClient::new(ch.clone())
        .create_signing_session(authed(session.clone(), &m.api_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("suspended"), "{refused:?}");
    // A triggered charge is refused, naming the rule.
    let trigger = |key: &str| TriggerChargeRequest {
        contract_id: ride.clone(),
        amount: cny(350),
        reason: "骑行结束".into(),
        idempotency_key: key.into(),
    };
    let mut scheduler = SchedulerServiceClient::new(ch.clone());
    let answer = scheduler.trigger_charge(authed(trigger("ride-1"), &m.api_key)).await.unwrap().into_inner();
    assert_eq!((answer.outcome, answer.rule.as_str()), (TriggerOutcome::Rejected as i32, "merchant_suspended"));
    // The cycle charge falling due meanwhile is refused too, not kept for later.
    advance_to(&ch, monthly_due(s.anchor_ms, 1) + HOUR_MS).await;
    let refused = outcome(&ch, &id, 1).await;
    assert_eq!((refused.state, refused.provider_code.as_str()), (ChargeState::Rejected as i32, "merchant_suspended"));

    // Reinstated: sessions open, and charges resume with the next period.
    review(&ch, &m, ReviewAction::Reinstate).await;
    schedule_when(&ch, &id, "the scheduler to know of the reinstatement", |s| !s.merchant_suspended).await;
    ContractsServiceClient::new(ch.clone()).create_signing_session(authed(session, &m.api_key)).await.unwrap();
    let answer = scheduler.trigger_charge(authed(trigger("ride-2"), &m.api_key)).await.unwrap().into_inner();
    assert_eq!(answer.outcome, TriggerOutcome::Scheduled as i32, "{answer:?}");
    advance_to(&ch, monthly_due(s.anchor_ms, 2) + HOUR_MS).await;
    assert_eq!(charged(&ch, &id, 2).await, 2_500);
    assert_eq!(outcome(&ch, &id, 1).await.state, ChargeState::Rejected as i32, "period 1 stays refused");
}
