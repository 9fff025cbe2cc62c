//! The analytics log follower: projects every event into the read models (`store`).
use crate::store::{self, Rejected, Run, Statement};
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};

pub struct Projector;

impl Processor for Projector {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "analytics.projections"
    }

    fn background(&self) -> bool {
        true
    }

    /// Every event: the projections count them all (`events_projected`).
    fn event_types(&self) -> &'static [&'static str] {
        &[]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        use serde_json::json;
        let mut notices = Vec::new();
        let mut run = Run::default();
        for d in events {
            match &d.kind {
                EventKind::ContractSigned(s) => {
                    run.push(tx, Statement::ContractSigned, json!([s.contract_id, s.merchant_id, s.signed_at_ms]))
                        .await?
                }
                EventKind::ContractTerminated(t) => {
                    run.push(tx, Statement::ContractState, json!([t.contract_id, "terminated", t.terminated_at_ms]))
                        .await?
                }
                EventKind::ContractExpired(e) => {
                    run.push(tx, Statement::ContractState, json!([e.contract_id, "expired", e.expired_at_ms])).await?
                }
                EventKind::ContractSuspended(s) => {
                    run.push(tx, Statement::ContractState, json!([s.contract_id, "suspended", 0])).await?
                }
                EventKind::ContractResumed(r) => {
                    run.push(tx, Statement::ContractState, json!([r.contract_id, "active", 0])).await?
                }
                EventKind::ChargeScheduled(s) => {
                    let amount = codec::money_from_pb(s.amount.as_ref()).ok();
                    let row = json!([
                        s.charge_id,
                        s.contract_id,
                        s.merchant_id,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        s.due_at_ms,
                    ]);
                    run.push(tx, Statement::ChargeScheduled, row).await?
                }
                EventKind::ChargeSucceeded(s) => {
                    run.push(tx, Statement::ChargeOutcome, json!([s.charge_id, "succeeded", "", s.succeeded_at_ms]))
                        .await?
                }
                EventKind::ChargeFailed(f) => {
                    let row = json!([f.charge_id, "failed", f.provider_code, f.failed_at_ms]);
                    run.push(tx, Statement::ChargeOutcome, row).await?
                }
                EventKind::ChargeRetryScheduled(r) => {
                    run.push(tx, Statement::ChargeOutcome, json!([r.charge_id, "scheduled", "", r.scheduled_at_ms]))
                        .await?
                }
                EventKind::ChargeRejected(r) => {
                    run.flush(tx).await?;
                    // Refused at issue, a charge has no row yet.
                    let amount = codec::money_from_pb(r.amount.as_ref()).ok();
                    let rejected = Rejected {
                        charge_id: &r.charge_id,
                        contract_id: &r.contract_id,
                        merchant_id: &r.merchant_id,
                        amount: amount.map(|m| m.minor_units()).unwrap_or(0),
                        currency: amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        rule: &r.rule,
                        due_at_ms: r.due_at_ms,
                        rejected_at_ms: r.rejected_at_ms,
                    };
                    store::save_rejected(tx, rejected).await?;
                }
                EventKind::NoticeRecorded(n) => notices.push(json!([n.contract_id])),
                _ => {}
            }
        }
        run.flush(tx).await?;
        store::bump(tx, "notices_recorded", notices.len() as i64).await?;
        // Each merchant's own count, through the contract the notice is about.
        store::count_merchant_notices(tx, notices).await?;
        store::bump(tx, "events_projected", events.len() as i64).await?;
        Ok(())
    }
}
