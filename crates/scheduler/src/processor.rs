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
        matches!(
            kind,
            EventKind::ContractSigned(_)
                | EventKind::ContractTerminated(_)
                | EventKind::ContractExpired(_)
                | EventKind::ContractSuspended(_)
                | EventKind::ContractResumed(_)
                | EventKind::ContractModified(_)
                | EventKind::PlanCreated(_)
                | EventKind::ChargeSucceeded(_)
        )
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
                    // A plan may ask for the first charge at signing (period 0).
                    let first_at_signing = tx
                        .query(
                            "SELECT first_charge_at_signing FROM scheduler_plans WHERE plan_id = $1",
                            &[Value::from(&s.plan_id)],
                        )
                        .await?
                        .first()
                        .and_then(|r| r.i64(0))
                        .unwrap_or(0)
                        != 0;
                    let (period, due) = if first_at_signing {
                        (0, s.signed_at_ms)
                    } else {
                        let Some(due) = cycle.due_at(from_millis(s.signed_at_ms), 1, beijing()) else { continue };
                        (1, due.timestamp_millis())
                    };
                    tx.execute(
                        "INSERT INTO scheduler_schedules
                           (contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, next_due_ms,
                            active, plan_id, expires_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)
                         ON CONFLICT (contract_id) DO NOTHING",
                        &[
                            Value::from(&s.contract_id),
                            Value::from(&s.merchant_id),
                            Value::from(&s.payer_id),
                            Value::Int(amount.minor_units()),
                            Value::from(amount.currency().as_str()),
                            Value::from(cycle.as_str()),
                            Value::Int(s.signed_at_ms),
                            Value::Int(period),
                            Value::Int(due),
                            Value::from(&s.plan_id),
                            Value::Int(s.expires_at_ms),
                        ],
                    )
                    .await?;
                }
                EventKind::PlanCreated(p) => {
                    let Some(terms) = &p.terms else { continue };
                    let cap = terms.per_charge_cap.as_ref().map(|m| m.minor_units).unwrap_or(0);
                    let daily = terms.daily_amount_limit.as_ref().map(|m| m.minor_units).unwrap_or(0);
                    tx.execute(
                        "INSERT INTO scheduler_plans
                           (plan_id, per_charge_cap, daily_count_limit, daily_amount_limit, first_charge_at_signing)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plan_id) DO NOTHING",
                        &[
                            Value::from(&p.plan_id),
                            Value::Int(cap),
                            Value::Int(i64::from(terms.daily_count_limit)),
                            Value::Int(daily),
                            Value::from(terms.first_charge_at_signing),
                        ],
                    )
                    .await?;
                }
                EventKind::ChargeSucceeded(c) => {
                    let amount = c.amount.as_ref().map(|m| m.minor_units).unwrap_or(0);
                    tx.execute(
                        "UPDATE scheduler_schedules SET total_succeeded = total_succeeded + $1,
                           first_success_ms = CASE WHEN first_success_ms = 0 THEN $2 ELSE first_success_ms END
                         WHERE contract_id = $3",
                        &[Value::Int(amount), Value::Int(c.succeeded_at_ms), Value::from(&c.contract_id)],
                    )
                    .await?;
                }
                EventKind::ContractTerminated(t) => stop(tx, &t.contract_id).await?,
                EventKind::ContractExpired(e) => stop(tx, &e.contract_id).await?,
                EventKind::ContractSuspended(s) => stop(tx, &s.contract_id).await?,
                EventKind::ContractResumed(r) => resume(tx, &r.contract_id, r.resumed_at_ms).await?,
                EventKind::ContractModified(m) => {
                    // New terms apply to the periods that fall due from now on.
                    let (Ok(amount), Some(cycle)) =
                        (codec::money_from_pb(m.amount_per_cycle.as_ref()), codec::cycle_from_pb(m.cycle))
                    else {
                        continue;
                    };
                    tx.execute(
                        "UPDATE scheduler_schedules SET amount = $1, currency = $2, cycle = $3 WHERE contract_id = $4",
                        &[
                            Value::Int(amount.minor_units()),
                            Value::from(amount.currency().as_str()),
                            Value::from(cycle.as_str()),
                            Value::from(&m.contract_id),
                        ],
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

async fn stop(tx: &mut Tx, contract_id: &str) -> anyhow::Result<()> {
    tx.execute("UPDATE scheduler_schedules SET active = 0 WHERE contract_id = $1", &[Value::from(contract_id)]).await?;
    Ok(())
}

/// Billing goes on from the first period due after the resumption: periods that fell due
/// while the contract was suspended are not charged.
async fn resume(tx: &mut Tx, contract_id: &str, at_ms: i64) -> anyhow::Result<()> {
    let rows = tx
        .query(
            &format!("SELECT {} FROM scheduler_schedules WHERE contract_id = $1", crate::store::COLUMNS),
            &[Value::from(contract_id)],
        )
        .await?;
    let Some(row) = rows.first().and_then(crate::store::ScheduleRow::from_row) else { return Ok(()) };
    let Some(cycle) = crate::store::cycle_from_str(&row.cycle) else { return Ok(()) };
    let mut period = u32::try_from(row.next_period).unwrap_or(u32::MAX);
    let mut due = row.next_due_ms;
    while due <= at_ms {
        period = period.saturating_add(1);
        match cycle.due_at(from_millis(row.anchor_ms), period, beijing()) {
            Some(t) => due = t.timestamp_millis(),
            None => return stop(tx, contract_id).await,
        }
    }
    tx.execute(
        "UPDATE scheduler_schedules SET active = 1, next_period = $1, next_due_ms = $2 WHERE contract_id = $3",
        &[Value::Int(i64::from(period)), Value::Int(due), Value::from(contract_id)],
    )
    .await?;
    Ok(())
}
