//! The questions analytics answers from its read models.
use crate::store;
use autodebit_eventstore::{EventStore, StoreError};
use autodebit_runtime::auth::Principal;
use std::collections::BTreeMap;

/// The platform's figures, or one merchant's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub contracts_active: u64,
    pub contracts_terminated: u64,
    pub contracts_suspended: u64,
    pub contracts_expired: u64,
    /// Every charge was scheduled first, whatever its outcome since.
    pub charges_scheduled: u64,
    pub charges_succeeded: u64,
    pub charges_failed: u64,
    pub charges_rejected: u64,
    /// What succeeded charges took, in minor units per currency.
    pub succeeded_minor_units_by_currency: BTreeMap<String, i64>,
    pub notices_recorded: u64,
    /// The events taken in: in the operator's summary only.
    pub events_projected: u64,
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// The summary `who` may see: the operator's covers the platform; a merchant's, only its own
/// contracts, charges and notices.
pub async fn summary(store: &EventStore, who: &Principal) -> Result<Summary, StoreError> {
    let merchant = match who {
        Principal::Operator => None,
        Principal::Merchant(m) => Some(m.as_str()),
    };
    let mut out = Summary::default();
    for r in store::contracts_by_state(store, merchant).await? {
        let n = count(r.n);
        match r.state.as_str() {
            "active" => out.contracts_active = n,
            "terminated" => out.contracts_terminated = n,
            "suspended" => out.contracts_suspended = n,
            "expired" => out.contracts_expired = n,
            _ => {}
        }
    }
    for r in store::charges_by_state(store, merchant).await? {
        let n = count(r.n);
        out.charges_scheduled += n;
        match r.state.as_str() {
            "succeeded" => out.charges_succeeded = n,
            "failed" => out.charges_failed = n,
            "rejected" => out.charges_rejected = n,
            _ => {}
        }
    }
    for r in store::succeeded_by_currency(store, merchant).await? {
        out.succeeded_minor_units_by_currency.insert(r.currency, r.total);
    }
    for r in store::counters(store, merchant).await? {
        let n = count(r.value);
        match r.name.as_str() {
            "notices_recorded" => out.notices_recorded = n,
            "events_projected" => out.events_projected = n,
            _ => {}
        }
    }
    Ok(out)
}
