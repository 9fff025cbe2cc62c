//! What the notifier tells, and to whom: the notice each event calls for (kind, recipient,
//! text), its id, and the notices a caller may read.
use autodebit_domain::ContractId;
use autodebit_domain::plan::{AmountType, ChargeMode};
use autodebit_domain::terms::Terms;
use autodebit_eventstore::{EventStore, StoreError};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, NoticeKind};
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec;
use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{self, NoticeRow};

/// The channel of this release: notices go to the process log.
pub const LOG_CHANNEL: &str = "log";

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2c0b_51f4_8d7e_4a9b_a3c6_71e0_94d2_5f18);

/// Why notices could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such contract, or another merchant's.
    #[error("contract_id: contract {0} not found")]
    NotFound(ContractId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The notices of `contract`, as `who` may read them: a merchant reads only its own contracts'
/// notices; another's is as good as missing.
pub async fn notices(store: &EventStore, who: &Principal, contract: ContractId) -> Result<Vec<NoticeRow>, ReadError> {
    let id = contract.to_string();
    if let Principal::Merchant(m) = who
        && store::merchant_of(store, &id).await?.as_deref() != Some(m.as_str())
    {
        return Err(ReadError::NotFound(contract));
    }
    Ok(store::notices_of(store, &id).await?)
}

pub(crate) type Plans = HashMap<String, Arc<pb::PlanTerms>>;

/// The terms a contract was signed on: its plan's, with the contract's own cycle and amount
/// (an imported contract may differ from its plan's); a contract of no known plan is a fixed
/// cycle of its amount.
pub(crate) fn signed_terms(s: &pb::ContractSigned, plan: Option<&pb::PlanTerms>) -> Terms {
    let amount = codec::money_from_pb(s.amount_per_cycle.as_ref()).unwrap_or(autodebit_domain::Money::cny(0));
    let cycle = codec::cycle_from_pb(s.cycle);
    let fixed = Terms {
        service_name: String::new(),
        charge_mode: ChargeMode::FixedCycle,
        cycle,
        amount_type: AmountType::Fixed,
        amount,
        per_charge_cap: amount,
        first_charge_at_signing: false,
        usage: None,
    };
    let Some(p) = plan else { return fixed };
    let charge_mode = match pb::ChargeMode::try_from(p.charge_mode) {
        Ok(pb::ChargeMode::Usage) => ChargeMode::Usage,
        Ok(pb::ChargeMode::EventTriggered) => ChargeMode::EventTriggered,
        Ok(pb::ChargeMode::Hybrid) => ChargeMode::Hybrid,
        _ => ChargeMode::FixedCycle,
    };
    let plan_cycle = codec::cycle_from_pb(p.cycle);
    Terms {
        service_name: p.service_name.clone(),
        charge_mode,
        cycle: if charge_mode == ChargeMode::FixedCycle || charge_mode == ChargeMode::Hybrid {
            cycle
        } else {
            plan_cycle
        },
        amount_type: if p.amount_type == pb::AmountType::Fixed as i32 {
            AmountType::Fixed
        } else {
            AmountType::UpToCap
        },
        per_charge_cap: codec::money_from_pb(p.per_charge_cap.as_ref()).unwrap_or(amount),
        first_charge_at_signing: p.first_charge_at_signing,
        usage: p.usage.as_ref().and_then(|u| {
            codec::usage_from_pb(u, pb::ChargeMode::try_from(p.charge_mode).unwrap_or_default(), plan_cycle).ok()
        }),
        ..fixed
    }
}

fn money(m: Option<&pb::Money>) -> String {
    codec::money_from_pb(m).map(|m| m.to_string()).unwrap_or_default()
}

/// A moment as the payer reads it: in the merchant's zone, named unless it is the default
/// (Beijing time), e.g. "2026-03-01 09:00 (Europe/London)".
fn local_time(at_ms: i64, zone: &str) -> String {
    use autodebit_domain::cycle::{DEFAULT_ZONE, zone as parse_zone};
    let at = autodebit_domain::clock::from_millis(at_ms);
    match parse_zone(zone) {
        Ok(tz) if !zone.is_empty() && zone != DEFAULT_ZONE => {
            format!("{} ({zone})", at.with_timezone(&tz).format("%Y-%m-%d %H:%M"))
        }
        _ => at.with_timezone(&autodebit_domain::cycle::beijing()).format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// The notice an event calls for: kind, recipient, contract, charge, text (Chinese, the
/// payers' default language). A signing notice states the terms of the contract's plan, as
/// the authorization page did.
pub(crate) fn notice_for<'a>(
    kind: &'a EventKind,
    plans: &Plans,
) -> Option<(NoticeKind, &'a str, &'a str, &'a str, String)> {
    Some(match kind {
        EventKind::ContractSigned(s) => {
            let terms = signed_terms(s, plans.get(&s.plan_id).map(|p| p.as_ref()));
            let service =
                if terms.service_name.is_empty() { String::new() } else { format!("「{}」", terms.service_name) };
            (
                NoticeKind::ContractSigned,
                s.payer_id.as_str(),
                s.contract_id.as_str(),
                "",
                format!(
                    "您已开通自动扣费服务{service}：{}。扣款前会提前通知您，您可随时解约。",
                    terms.lines(false).join("；")
                ),
            )
        }
        EventKind::ContractTerminated(t) => (
            NoticeKind::ContractTerminated,
            t.payer_id.as_str(),
            t.contract_id.as_str(),
            "",
            "您的自动扣费协议已解除，此后不会再扣款。".to_string(),
        ),
        EventKind::ContractModified(m) => {
            (NoticeKind::ContractModified, m.payer_id.as_str(), m.contract_id.as_str(), "", m.notice.clone())
        }
        EventKind::ContractSuspended(s) => (
            NoticeKind::ContractSuspended,
            s.payer_id.as_str(),
            s.contract_id.as_str(),
            "",
            format!("您的自动扣费已暂停：{}。", s.reason),
        ),
        EventKind::ContractResumed(r) => (
            NoticeKind::ContractResumed,
            r.payer_id.as_str(),
            r.contract_id.as_str(),
            "",
            "您的自动扣费已恢复。".to_string(),
        ),
        EventKind::ContractExpired(e) => (
            NoticeKind::ContractExpired,
            e.payer_id.as_str(),
            e.contract_id.as_str(),
            "",
            "您的自动扣费协议已到期，此后不会再扣款。".to_string(),
        ),
        EventKind::ContractZombieFlagged(z) => (
            NoticeKind::ContractZombie,
            z.payer_id.as_str(),
            z.contract_id.as_str(),
            "",
            "您的自动扣费协议已长期未使用，如继续不使用将自动解约。".to_string(),
        ),
        EventKind::ChargeSucceeded(s) => (
            NoticeKind::ChargeSucceeded,
            s.payer_id.as_str(),
            s.contract_id.as_str(),
            s.charge_id.as_str(),
            format!("本期自动扣款 {} 已成功。", money(s.amount.as_ref())),
        ),
        EventKind::ChargeFailed(f) => (
            NoticeKind::ChargeFailed,
            f.payer_id.as_str(),
            f.contract_id.as_str(),
            f.charge_id.as_str(),
            format!("本期自动扣款 {} 未成功（{}）。", money(f.amount.as_ref()), f.provider_code),
        ),
        EventKind::PreDebitNoticeIssued(n) => (
            NoticeKind::PreDebit,
            n.payer_id.as_str(),
            n.contract_id.as_str(),
            n.charge_id.as_str(),
            format!(
                "扣款提醒：您的自动扣费预计于 {} 扣款 {}。如不再需要，可在此之前解约。",
                local_time(n.charge_due_at_ms, &n.time_zone),
                money(n.estimated_amount.as_ref())
            ),
        ),
        _ => return None,
    })
}

/// A notice's id, one per causing event whatever happens. It leads with its contract id's
/// first eight bytes, as charge ids do, so that a billing run's notices (issued about in
/// contract order) land next to each other in the notices table and the stream index instead
/// of at random places.
pub(crate) fn notice_id(contract_id: &str, event_id: &str) -> String {
    let mut b = *uuid::Uuid::new_v5(&NAMESPACE, event_id.as_bytes()).as_bytes();
    if let Ok(contract) = autodebit_domain::ContractId::parse(contract_id) {
        b[..8].copy_from_slice(&contract.leading_bytes());
    }
    format!("nt_{}", uuid::Uuid::from_bytes(b).simple())
}

#[cfg(test)]
mod tests {
    use super::notice_id;

    #[test]
    fn notice_ids_are_one_per_event_and_sort_with_their_contract() {
        let a = autodebit_domain::ContractId::generate().to_string();
        let b = autodebit_domain::ContractId::generate().to_string();
        assert_eq!(notice_id(&a, "ev-1"), notice_id(&a, "ev-1"), "the same event gives the same notice");
        assert_ne!(notice_id(&a, "ev-1"), notice_id(&a, "ev-2"));
        // Both lead with the contract id's first eight bytes (16 hex digits after the prefix).
        assert_eq!(notice_id(&a, "ev-1")[3..19], a[3..19]);
        assert!(
            notice_id(&a, "ev-9") < notice_id(&b, "ev-1") || a[3..19] == b[3..19],
            "a later contract's notices sort after"
        );
        // A notice of no contract still has an id.
        assert!(notice_id("", "ev-1").starts_with("nt_"));
    }
}
