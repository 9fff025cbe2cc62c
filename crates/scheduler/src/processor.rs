//! Follows contracts: a signed contract gets a schedule; a terminated one stops billing.
use autodebit_domain::clock::from_millis;
use autodebit_domain::cycle::beijing;
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::EventKind;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};

pub struct ContractFollower;

impl Processor for ContractFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "scheduler.contracts"
    }

    fn wants(&self, kind: &EventKind) -> bool {
        matches!(kind, EventKind::ContractSigned(_) | EventKind::ContractTerminated(_))
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        for d in events {
            match &d.kind {
                EventKind::ContractSigned(s) => {
                    let Some(cycle) = codec::cycle_from_pb(s.cycle) else {
                        tracing::error!(contract = s.contract_id, "signed contract without a cycle; not scheduled");
                        continue;
                    };
                    let Ok(amount) = codec::money_from_pb(s.amount_per_cycle.as_ref()) else {
                        tracing::error!(contract = s.contract_id, "signed contract without an amount; not scheduled");
                        continue;
                    };
                    let Some(due) = cycle.due_at(from_millis(s.signed_at_ms), 1, beijing()) else { continue };
                    tx.execute(
                        "INSERT INTO scheduler_schedules
                           (contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, next_due_ms, active)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, 1)
                         ON CONFLICT (contract_id) DO NOTHING",
                        &[
                            Value::from(&s.contract_id),
                            Value::from(&s.merchant_id),
                            Value::from(&s.payer_id),
                            Value::Int(amount.minor_units()),
                            Value::from(amount.currency().as_str()),
                            Value::from(cycle.as_str()),
                            Value::Int(s.signed_at_ms),
                            Value::Int(due.timestamp_millis()),
                        ],
                    )
                    .await?;
                }
                EventKind::ContractTerminated(t) => {
                    tx.execute(
                        "UPDATE scheduler_schedules SET active = 0 WHERE contract_id = $1",
                        &[Value::from(&t.contract_id)],
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
