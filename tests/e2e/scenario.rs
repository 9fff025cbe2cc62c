//! The end-to-end scenario both deployments must pass: sign, advance one cycle, the charge
//! succeeded, analytics counts it, the payer was told.
#![allow(dead_code)]

use crate::support::eventually;
use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::charger::v1::{ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient};
use autodebit_proto::contracts::v1::{SignContractRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{Cycle, Money, NoticeKind};
use autodebit_proto::notifier::v1::{ListNoticesRequest, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{GetScheduleRequest, scheduler_service_client::SchedulerServiceClient};
use tonic::transport::Channel;

/// Where each service answers (the same channel for `autodebit run`).
pub struct Endpoints {
    pub contracts: Channel,
    pub scheduler: Channel,
    pub charger: Channel,
    pub notifier: Channel,
    pub analytics: Channel,
}

/// The operator key every test process is started with.
pub use crate::support::{OPERATOR as OPERATOR_KEY, authed};

/// An onboarded merchant: approved, with an API key and a monthly plan (cap 500.00 CNY).
#[derive(Clone)]
pub struct Merchant {
    pub merchant_id: String,
    pub api_key: String,
    pub plan_id: String,
}

pub fn documents(kinds: &[autodebit_proto::events::v1::DocumentKind]) -> Vec<autodebit_proto::events::v1::Document> {
    kinds
        .iter()
        .map(|k| autodebit_proto::events::v1::Document {
            kind: *k as i32,
            sha256: "ab".repeat(32),
            location: format!("s3://docs/{}", *k as i32),
        })
        .collect()
}

pub fn base_documents() -> Vec<autodebit_proto::events::v1::Document> {
    use autodebit_proto::events::v1::DocumentKind::*;
    documents(&[BusinessLicence, LegalRepresentativeId, CorporateBankAccount])
}

pub fn application(credit_code: &str) -> autodebit_proto::contracts::v1::ApplyMerchantRequest {
    use autodebit_proto::events::v1::{EntityKind, MerchantType};
    autodebit_proto::contracts::v1::ApplyMerchantRequest {
        legal_name: "测试会员服务有限公司".into(),
        credit_code: credit_code.into(),
        entity: EntityKind::Enterprise as i32,
        industry: "membership".into(),
        merchant_type: MerchantType::Other as i32,
        documents: base_documents(),
        contact_email: "ops@example.cn".into(),
        idempotency_key: String::new(),
        time_zone: String::new(),
    }
}

pub fn monthly_terms() -> autodebit_proto::events::v1::PlanTerms {
    use autodebit_proto::events::v1::{AmountType, ChargeMode, PlanTerms};
    PlanTerms {
        service_name: "视频会员".into(),
        charge_mode: ChargeMode::FixedCycle as i32,
        cycle: Cycle::Monthly as i32,
        amount_type: AmountType::UpToCap as i32,
        per_charge_cap: Some(Money { minor_units: 50_000, currency: "CNY".into() }),
        service_period_days: 365,
        validity_days: 395,
        retry_schedule_hours: vec![6, 24],
        ..Default::default()
    }
}

/// Applies, reviews and approves a merchant, and creates a monthly plan for it.
pub async fn onboard(channel: &Channel, credit_code: &str) -> Merchant {
    onboard_with(channel, application(credit_code)).await
}

/// Onboards the merchant `application` describes.
pub async fn onboard_with(
    channel: &Channel,
    application: autodebit_proto::contracts::v1::ApplyMerchantRequest,
) -> Merchant {
    use autodebit_proto::contracts::v1::{
        CreatePlanRequest, ReviewAction, ReviewMerchantRequest, merchants_service_client::MerchantsServiceClient,
        plans_service_client::PlansServiceClient,
    };
    let mut merchants = MerchantsServiceClient::new(channel.clone());
    let m = merchants.apply_merchant(application).await.unwrap().into_inner().merchant.unwrap();
    let review = |action: ReviewAction| {
        authed(
            ReviewMerchantRequest { merchant_id: m.merchant_id.clone(), action: action as i32, reason: String::new() },
            OPERATOR_KEY,
        )
    };
    merchants.review_merchant(review(ReviewAction::Start)).await.unwrap();
    let api_key = merchants.review_merchant(review(ReviewAction::Approve)).await.unwrap().into_inner().api_key;
    assert!(api_key.starts_with("adk_"), "{api_key}");
    let mut plans = PlansServiceClient::new(channel.clone());
    let plan = plans
        .create_plan(authed(
            CreatePlanRequest { terms: Some(monthly_terms()), idempotency_key: String::new() },
            &api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    Merchant { merchant_id: m.merchant_id, api_key, plan_id: plan.plan_id }
}

/// A contract import for `merchant`, signed with the operator key.
pub fn sign_request(merchant: &Merchant, payer: &str, fen: i64) -> SignContractRequest {
    SignContractRequest {
        merchant_id: merchant.merchant_id.clone(),
        payer_id: payer.into(),
        amount_per_cycle: Some(Money { minor_units: fen, currency: "CNY".into() }),
        cycle: Cycle::Monthly as i32,
        idempotency_key: String::new(),
        merchant_contract_code: String::new(),
        plan_id: merchant.plan_id.clone(),
    }
}

/// The charge id a contract's period has: derived from (contract, period), as documented.
pub fn charge_id(contract_id: &str, period: u32) -> String {
    autodebit_domain::ChargeId::for_period(autodebit_domain::ContractId::parse(contract_id).unwrap(), period)
        .to_string()
}

pub async fn sign_advance_charge(e: &Endpoints) {
    let merchant = onboard(&e.contracts, "91330100MA2E2E0001").await;
    let mut contracts = ContractsServiceClient::new(e.contracts.clone());
    let contract = contracts
        .sign_contract(authed(sign_request(&merchant, "payer-e2e", 2_500), OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    let id = contract.contract_id.clone();

    // The scheduler has the contract's schedule before time moves.
    let mut scheduler = SchedulerServiceClient::new(e.scheduler.clone());
    let schedule = eventually("the contract's schedule", 30, || {
        let mut s = scheduler.clone();
        let id = id.clone();
        async move {
            s.get_schedule(crate::support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()
                .map(|r| r.into_inner())
        }
    })
    .await
    .schedule
    .unwrap();
    assert_eq!(schedule.next_period, 1);
    assert!(schedule.next_due_at_ms > contract.signed_at_ms);

    // Nothing is charged before the cycle ends.
    let mut charger = ChargerServiceClient::new(e.charger.clone());
    let first = charge_id(&id, 1);
    let early =
        charger.get_charge(crate::support::op(GetChargeRequest { charge_id: first.clone() })).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::NotFound);

    // One cycle later — its pre-debit notice a day before — the charge has succeeded.
    assert_eq!(bill_next_period(&e.scheduler, &id).await, 1);
    let charge = eventually("the first charge to succeed", 30, || {
        let mut c = charger.clone();
        let first = first.clone();
        async move {
            let ch = c
                .get_charge(crate::support::op(GetChargeRequest { charge_id: first }))
                .await
                .ok()?
                .into_inner()
                .charge?;
            (ch.state == ChargeState::Succeeded as i32).then_some(ch)
        }
    })
    .await;
    assert_eq!(charge.contract_id, id);
    assert_eq!(charge.period, 1);
    assert_eq!(charge.amount.unwrap().minor_units, 2_500);
    assert!(!charge.provider_transaction_id.is_empty());
    // Exactly one period was due.
    let next = scheduler
        .get_schedule(crate::support::op(GetScheduleRequest { contract_id: id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(next.next_period, 2);
    let second =
        charger.get_charge(crate::support::op(GetChargeRequest { charge_id: charge_id(&id, 2) })).await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::NotFound);

    // Analytics counts it.
    let analytics = AnalyticsServiceClient::new(e.analytics.clone());
    let summary = eventually("analytics to count the charge", 30, || {
        let mut a = analytics.clone();
        async move {
            let s = a.get_summary(crate::support::op(GetSummaryRequest {})).await.ok()?.into_inner();
            (s.charges_succeeded == 1).then_some(s)
        }
    })
    .await;
    assert_eq!(summary.contracts_active, 1);
    assert_eq!(summary.charges_scheduled, 1);
    assert_eq!(summary.charges_failed, 0);
    assert_eq!(summary.succeeded_minor_units_by_currency.get("CNY"), Some(&2_500));

    // The payer heard about the signing, the coming charge (a day ahead) and the charge.
    let notifier = NotifierServiceClient::new(e.notifier.clone());
    let notices = eventually("three notices", 30, || {
        let mut n = notifier.clone();
        let id = id.clone();
        async move {
            let list = n
                .list_notices(crate::support::op(ListNoticesRequest { contract_id: id }))
                .await
                .ok()?
                .into_inner()
                .notices;
            (list.len() == 3).then_some(list)
        }
    })
    .await;
    let kinds: Vec<i32> = notices.iter().map(|n| n.kind).collect();
    assert!(kinds.contains(&(NoticeKind::ContractSigned as i32)));
    assert!(kinds.contains(&(NoticeKind::ChargeSucceeded as i32)));
    let ahead = notices.iter().find(|n| n.kind == NoticeKind::PreDebit as i32).expect("a pre-debit notice");
    assert!(ahead.text.contains("扣款提醒") && ahead.text.contains("25.00"), "{}", ahead.text);
    assert!(notices.iter().all(|n| n.recipient == "payer-e2e"));
}

/// Moves the test clock (through the admin service on `ch`) to `at_ms`, if it is not past it.
pub async fn advance_to(ch: &Channel, at_ms: i64) {
    use autodebit_proto::scheduler::v1::GetSchedulerStatusRequest;
    let now = SchedulerServiceClient::new(ch.clone())
        .get_scheduler_status(crate::support::op(GetSchedulerStatusRequest {}))
        .await
        .unwrap()
        .into_inner()
        .now_ms;
    let seconds = (at_ms - now + 999).div_euclid(1000);
    if seconds > 0 {
        AdminServiceClient::new(ch.clone())
            .advance_clock(crate::support::op(AdvanceClockRequest { seconds }))
            .await
            .unwrap();
    }
}

/// Runs a fixed-cycle contract's next period as a ticking clock would: on to its pre-debit
/// notice time, wait for the notice, on to its due time, wait for the charge to be issued.
/// `ch` serves the scheduler and the admin service. Returns the period billed.
pub async fn bill_next_period(ch: &Channel, contract_id: &str) -> u32 {
    let schedule = |ch: Channel, id: String| async move {
        SchedulerServiceClient::new(ch)
            .get_schedule(crate::support::op(GetScheduleRequest { contract_id: id }))
            .await
            .ok()?
            .into_inner()
            .schedule
    };
    let s = eventually("the contract's schedule", 30, || schedule(ch.clone(), contract_id.to_string())).await;
    let period = s.next_period;
    advance_to(ch, s.next_due_at_ms - 24 * 3_600_000).await;
    eventually("the pre-debit notice", 30, || {
        let f = schedule(ch.clone(), contract_id.to_string());
        async move { f.await.filter(|s| s.noticed_period >= period) }
    })
    .await;
    // A notice given late (the contract resumed a moment ago, say) holds its charge back for
    // the whole lead time: the schedule says until when.
    let noticed = schedule(ch.clone(), contract_id.to_string()).await.unwrap();
    advance_to(ch, noticed.next_charge_at_ms.max(s.next_due_at_ms)).await;
    eventually("the period's charge to be issued", 30, || {
        let f = schedule(ch.clone(), contract_id.to_string());
        async move { f.await.filter(|s| s.next_period > period || !s.active) }
    })
    .await;
    period
}

/// Waits for the scheduler to have taken in a suspension (or an end) of `contract_id`, so that
/// moving the test clock afterwards cannot bill periods the contract no longer owes.
pub async fn wait_stopped(ch: &Channel, contract_id: &str) {
    eventually("the schedule to stop", 30, || {
        let (ch, id) = (ch.clone(), contract_id.to_string());
        async move {
            let s = SchedulerServiceClient::new(ch)
                .get_schedule(crate::support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()?;
            s.into_inner().schedule.filter(|s| !s.active).map(|_| ())
        }
    })
    .await;
}

/// Waits until the scheduler's due loop has taken every timer due at the clock's present time
/// (the count is of active schedules, so a stopped one is never waited for) and has made a
/// pass since the clock got there that found nothing left: retries and charges held for the
/// window included.
pub async fn scheduler_idle(ch: &Channel) {
    use autodebit_proto::scheduler::v1::GetSchedulerStatusRequest;
    eventually("the due loop to take every due timer", 30, || {
        let ch = ch.clone();
        async move {
            let s = SchedulerServiceClient::new(ch)
                .get_scheduler_status(authed(GetSchedulerStatusRequest {}, OPERATOR_KEY))
                .await
                .ok()?;
            let s = s.into_inner();
            (s.due_timers == 0 && s.checked_through_ms >= s.now_ms).then_some(())
        }
    })
    .await;
}

/// Waits for the scheduler to have taken in a resumption of `contract_id` (its schedule bills
/// again), so that the next period it reports is the one after the resumption.
pub async fn wait_billing(ch: &Channel, contract_id: &str) {
    eventually("the schedule to bill again", 30, || {
        let (ch, id) = (ch.clone(), contract_id.to_string());
        async move {
            let s = SchedulerServiceClient::new(ch)
                .get_schedule(crate::support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()?;
            s.into_inner().schedule.filter(|s| s.active).map(|_| ())
        }
    })
    .await;
}

/// Creates a plan for `m`: the monthly terms with `change` applied.
pub async fn create_plan(
    ch: &Channel,
    m: &Merchant,
    change: impl FnOnce(&mut autodebit_proto::events::v1::PlanTerms),
) -> String {
    use autodebit_proto::contracts::v1::{CreatePlanRequest, plans_service_client::PlansServiceClient};
    let mut terms = monthly_terms();
    change(&mut terms);
    let req = CreatePlanRequest { terms: Some(terms), idempotency_key: String::new() };
    let plan = PlansServiceClient::new(ch.clone()).create_plan(authed(req, &m.api_key)).await.unwrap();
    plan.into_inner().plan.unwrap().plan_id
}

/// Imports (operator key) a contract of `payer` on `plan_id`; returns its id.
pub async fn sign_on(ch: &Channel, m: &Merchant, plan_id: &str, payer: &str, fen: i64, cycle: Cycle) -> String {
    let mut req = sign_request(m, payer, fen);
    req.plan_id = plan_id.into();
    req.cycle = cycle as i32;
    let c = ContractsServiceClient::new(ch.clone()).sign_contract(authed(req, OPERATOR_KEY)).await.unwrap();
    c.into_inner().contract.unwrap().contract_id
}
