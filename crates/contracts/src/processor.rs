//! Follows charge outcomes: a success resets the contract's run of failures; the third failed
//! charge in a row suspends it, and the suspension says why.
use crate::app::{AppError, Contracts};
use autodebit_domain::ContractId;
use autodebit_domain::contract::{self, ContractCommand};
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::EventKind;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::{Decoded, Processor};

pub struct ChargeOutcomes {
    pub app: Contracts,
}

impl Processor for ChargeOutcomes {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "contracts.charge_outcomes"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["ChargeSucceeded", "ChargeFailed"]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        // Successes are written together; a failure, which may suspend its contract, is taken
        // on its own, after the successes before it.
        let mut successes: Vec<(&str, i64)> = Vec::new();
        for d in events {
            match &d.kind {
                EventKind::ChargeSucceeded(s) => successes.push((&s.contract_id, s.succeeded_at_ms)),
                EventKind::ChargeFailed(f) => {
                    record_successes(tx, std::mem::take(&mut successes)).await?;
                    let rows = tx
                        .query(
                            "UPDATE contracts_contracts SET consecutive_failures = consecutive_failures + 1
                             WHERE contract_id = $1 RETURNING consecutive_failures, state",
                            &[Value::from(&f.contract_id)],
                        )
                        .await?;
                    let Some(row) = rows.first() else { continue };
                    let failures = u32::try_from(row.i64(0).unwrap_or(0)).unwrap_or(u32::MAX);
                    let status = row.text(1).and_then(crate::app::status_of);
                    if !status.is_some_and(|s| contract::failures_suspend(failures, s)) {
                        continue;
                    }
                    let Ok(id) = ContractId::parse(&f.contract_id) else { continue };
                    let reason = format!(
                        "{failures} consecutive failed charges; the last, {}, failed with {}",
                        f.charge_id, f.provider_code
                    );
                    match self.app.execute_in(tx, id, None, ContractCommand::Suspend { reason }, &Cause::of(d)).await {
                        Ok((c, _)) => {
                            tracing::info!(contract = %id, status = ?c.status, "suspended after failed charges")
                        }
                        // Ended meanwhile (or suspended by someone else): nothing to do.
                        Err(AppError::Rule(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => {}
            }
        }
        record_successes(tx, successes).await
    }
}

/// Resets the run of failures of each contract with a success, in one statement; a contract's
/// last success (in log order) sets its time.
async fn record_successes(tx: &mut Tx, successes: Vec<(&str, i64)>) -> anyhow::Result<()> {
    if successes.is_empty() {
        return Ok(());
    }
    let last: std::collections::HashMap<&str, i64> = successes.into_iter().collect();
    let rows: Vec<serde_json::Value> = last.into_iter().map(|(id, at)| serde_json::json!([id, at])).collect();
    tx.execute(
        &format!(
            "UPDATE contracts_contracts SET consecutive_failures = 0, last_success_at_ms = v.at, zombie_flagged_at_ms = 0
             FROM (SELECT value->>0 AS id, CAST(value->>1 AS BIGINT) AS at FROM {}) v
             WHERE contracts_contracts.contract_id = v.id",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}
