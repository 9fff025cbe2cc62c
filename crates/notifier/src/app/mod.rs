//! What the notifier tells, and to whom: what each event calls for (`compose`), merchants'
//! settings and templates (`settings`), webhook endpoints (`webhooks`), notice ids, and the
//! notices a caller may read.
pub mod compose;
pub mod rebuild;
pub mod receipts;
pub mod settings;
pub mod webhooks;
use autodebit_domain::ContractId;
use autodebit_domain::notice::NoticeKind;
use autodebit_domain::terms::Terms;
use autodebit_eventstore::{EventStore, StoreError};
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec;
use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{self, NoticeRow};

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

/// The terms a contract was signed on (`codec::plan::contract_terms`).
pub(crate) fn signed_terms(s: &pb::ContractSigned, plan: Option<&pb::PlanTerms>) -> Terms {
    let amount = codec::money_from_pb(s.amount_per_cycle.as_ref()).unwrap_or(autodebit_domain::Money::cny(0));
    codec::plan::contract_terms(amount, codec::cycle_from_pb(s.cycle), plan)
}

pub(crate) use autodebit_domain::notice::notice_id;

/// A notice kind as the log has it.
pub fn kind_to_pb(k: NoticeKind) -> pb::NoticeKind {
    use pb::NoticeKind as P;
    match k {
        NoticeKind::ContractSigned => P::ContractSigned,
        NoticeKind::PreDebit => P::PreDebit,
        NoticeKind::ChargeSucceeded => P::ChargeSucceeded,
        NoticeKind::ChargeFailed => P::ChargeFailed,
        NoticeKind::RetryScheduled => P::RetryScheduled,
        NoticeKind::ContractModified => P::ContractModified,
        NoticeKind::ContractSuspended => P::ContractSuspended,
        NoticeKind::ContractResumed => P::ContractResumed,
        NoticeKind::ContractExpiring => P::ContractExpiring,
        NoticeKind::ContractExpired => P::ContractExpired,
        NoticeKind::ContractTerminated => P::ContractTerminated,
        NoticeKind::ContractZombie => P::ContractZombie,
        NoticeKind::RefundSucceeded => P::RefundSucceeded,
        NoticeKind::VerificationCode => P::VerificationCode,
        NoticeKind::ChargeHeld => P::ChargeHeld,
        NoticeKind::ComplaintReceived => P::ComplaintReceived,
    }
}

/// The notice kind a logged number stands for.
pub fn kind_from_pb(k: i32) -> Option<NoticeKind> {
    NoticeKind::ALL.into_iter().find(|n| kind_to_pb(*n) as i32 == k)
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
