//! Projects every event into the analytics tables.
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::EventKind;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};

pub struct Projector;

async fn bump(tx: &mut Tx, name: &str, by: i64) -> anyhow::Result<()> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO analytics_counters (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = analytics_counters.value + excluded.value",
        &[Value::from(name), Value::Int(by)],
    )
    .await?;
    Ok(())
}

async fn contract_state(tx: &mut Tx, contract_id: &str, state: &str, ended_at_ms: i64) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE analytics_contracts SET state = $1, ended_at_ms = $2 WHERE contract_id = $3",
        &[Value::from(state), Value::Int(ended_at_ms), Value::from(contract_id)],
    )
    .await?;
    Ok(())
}

/// Moves a charge to an outcome; the charge row exists, since its `ChargeScheduled` comes
/// first in its stream and the log keeps stream order.
async fn charge_outcome(tx: &mut Tx, charge_id: &str, state: &str, code: &str, at_ms: i64) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE analytics_charges SET state = $1, code = $2, updated_at_ms = $3 WHERE charge_id = $4",
        &[Value::from(state), Value::from(code), Value::Int(at_ms), Value::from(charge_id)],
    )
    .await?;
    Ok(())
}

impl Processor for Projector {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "analytics.projections"
    }

    /// Every event: the projections count them all (`events_projected`).
    fn event_types(&self) -> &'static [&'static str] {
        &[]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        let mut notices = 0;
        for d in events {
            match &d.kind {
                EventKind::ContractSigned(s) => {
                    tx.execute(
                        "INSERT INTO analytics_contracts (contract_id, merchant_id, state, signed_at_ms, ended_at_ms)
                         VALUES ($1, $2, 'active', $3, 0) ON CONFLICT (contract_id) DO NOTHING",
                        &[Value::from(&s.contract_id), Value::from(&s.merchant_id), Value::Int(s.signed_at_ms)],
                    )
                    .await?;
                }
                EventKind::ContractTerminated(t) => {
                    contract_state(tx, &t.contract_id, "terminated", t.terminated_at_ms).await?
                }
                EventKind::ContractExpired(e) => contract_state(tx, &e.contract_id, "expired", e.expired_at_ms).await?,
                EventKind::ContractSuspended(s) => contract_state(tx, &s.contract_id, "suspended", 0).await?,
                EventKind::ContractResumed(r) => contract_state(tx, &r.contract_id, "active", 0).await?,
                EventKind::ChargeScheduled(s) => {
                    let amount = codec::money_from_pb(s.amount.as_ref()).ok();
                    tx.execute(
                        "INSERT INTO analytics_charges
                           (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
                         VALUES ($1, $2, $3, $4, $5, 'scheduled', '', $6, $6) ON CONFLICT (charge_id) DO NOTHING",
                        &[
                            Value::from(&s.charge_id),
                            Value::from(&s.contract_id),
                            Value::from(&s.merchant_id),
                            Value::Int(amount.map(|m| m.minor_units()).unwrap_or(0)),
                            Value::from(amount.map(|m| m.currency().to_string()).unwrap_or_default()),
                            Value::Int(s.due_at_ms),
                        ],
                    )
                    .await?;
                }
                EventKind::ChargeSucceeded(s) => {
                    charge_outcome(tx, &s.charge_id, "succeeded", "", s.succeeded_at_ms).await?
                }
                EventKind::ChargeFailed(f) => {
                    charge_outcome(tx, &f.charge_id, "failed", &f.provider_code, f.failed_at_ms).await?
                }
                EventKind::ChargeRejected(r) => {
                    // Refused at issue, a charge has no row yet.
                    let amount = codec::money_from_pb(r.amount.as_ref()).ok();
                    tx.execute(
                        "INSERT INTO analytics_charges
                           (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
                         VALUES ($1, $2, $3, $4, $5, 'rejected', $6, $7, $8)
                         ON CONFLICT (charge_id) DO UPDATE SET state = 'rejected', code = excluded.code,
                           updated_at_ms = excluded.updated_at_ms",
                        &[
                            Value::from(&r.charge_id),
                            Value::from(&r.contract_id),
                            Value::from(&r.merchant_id),
                            Value::Int(amount.map(|m| m.minor_units()).unwrap_or(0)),
                            Value::from(amount.map(|m| m.currency().to_string()).unwrap_or_default()),
                            Value::from(&r.rule),
                            Value::Int(r.due_at_ms),
                            Value::Int(r.rejected_at_ms),
                        ],
                    )
                    .await?;
                }
                EventKind::ChargeRetryScheduled(r) => {
                    charge_outcome(tx, &r.charge_id, "scheduled", "", r.scheduled_at_ms).await?
                }
                EventKind::NoticeRecorded(_) => notices += 1,
                _ => {}
            }
        }
        bump(tx, "notices_recorded", notices).await?;
        bump(tx, "events_projected", events.len() as i64).await?;
        Ok(())
    }
}
