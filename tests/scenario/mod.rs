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

pub fn sign_request(payer: &str, fen: i64) -> SignContractRequest {
    SignContractRequest {
        merchant_id: "merchant-1".into(),
        payer_id: payer.into(),
        amount_per_cycle: Some(Money { minor_units: fen, currency: "CNY".into() }),
        cycle: Cycle::Monthly as i32,
        idempotency_key: String::new(),
        merchant_contract_code: String::new(),
    }
}

/// The charge id a contract's period has: derived from (contract, period), as documented.
pub fn charge_id(contract_id: &str, period: u32) -> String {
    autodebit_domain::ChargeId::for_period(autodebit_domain::ContractId::parse(contract_id).unwrap(), period)
        .to_string()
}

pub async fn sign_advance_charge(e: &Endpoints) {
    let mut contracts = ContractsServiceClient::new(e.contracts.clone());
    let contract =
        contracts.sign_contract(sign_request("payer-e2e", 2_500)).await.unwrap().into_inner().contract.unwrap();
    let id = contract.contract_id.clone();

    // The scheduler has the contract's schedule before time moves.
    let mut scheduler = SchedulerServiceClient::new(e.scheduler.clone());
    let schedule = eventually("the contract's schedule", 30, || {
        let mut s = scheduler.clone();
        let id = id.clone();
        async move { s.get_schedule(GetScheduleRequest { contract_id: id }).await.ok().map(|r| r.into_inner()) }
    })
    .await
    .schedule
    .unwrap();
    assert_eq!(schedule.next_period, 1);
    assert!(schedule.next_due_at_ms > contract.signed_at_ms);

    // Nothing is charged before the cycle ends.
    let mut charger = ChargerServiceClient::new(e.charger.clone());
    let first = charge_id(&id, 1);
    let early = charger.get_charge(GetChargeRequest { charge_id: first.clone() }).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::NotFound);

    // One cycle later (31 days covers every month) the charge has succeeded.
    let mut admin = AdminServiceClient::new(e.scheduler.clone());
    admin.advance_clock(AdvanceClockRequest { seconds: 31 * 86_400 }).await.unwrap();
    let charge = eventually("the first charge to succeed", 30, || {
        let mut c = charger.clone();
        let first = first.clone();
        async move {
            let ch = c.get_charge(GetChargeRequest { charge_id: first }).await.ok()?.into_inner().charge?;
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
        .get_schedule(GetScheduleRequest { contract_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(next.next_period, 2);
    let second = charger.get_charge(GetChargeRequest { charge_id: charge_id(&id, 2) }).await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::NotFound);

    // Analytics counts it.
    let analytics = AnalyticsServiceClient::new(e.analytics.clone());
    let summary = eventually("analytics to count the charge", 30, || {
        let mut a = analytics.clone();
        async move {
            let s = a.get_summary(GetSummaryRequest {}).await.ok()?.into_inner();
            (s.charges_succeeded == 1).then_some(s)
        }
    })
    .await;
    assert_eq!(summary.contracts_active, 1);
    assert_eq!(summary.charges_scheduled, 1);
    assert_eq!(summary.charges_failed, 0);
    assert_eq!(summary.succeeded_minor_units_by_currency.get("CNY"), Some(&2_500));

    // The payer heard about the signing and the charge.
    let notifier = NotifierServiceClient::new(e.notifier.clone());
    let notices = eventually("two notices", 30, || {
        let mut n = notifier.clone();
        let id = id.clone();
        async move {
            let list = n.list_notices(ListNoticesRequest { contract_id: id }).await.ok()?.into_inner().notices;
            (list.len() == 2).then_some(list)
        }
    })
    .await;
    let kinds: Vec<i32> = notices.iter().map(|n| n.kind).collect();
    assert!(kinds.contains(&(NoticeKind::ContractSigned as i32)));
    assert!(kinds.contains(&(NoticeKind::ChargeSucceeded as i32)));
    assert!(notices.iter().all(|n| n.recipient == "payer-e2e"));
}
