//! Follows charge outcomes: a success resets the contract's run of failures; the third failed
//! charge in a row suspends it (`domain::contract::failures_suspend`), and the suspension says
//! why. It also keeps the risk rule settings (`RiskRuleSet`) the sign-time checks read, and
//! merchants' credit scores (`CreditScoreChanged`), below whose floor no signing goes ahead.
use crate::app::contracts::{AppError, Contracts};
use crate::store;
use autodebit_domain::ContractId;
use autodebit_domain::contract::{self, ContractCommand};
use autodebit_eventstore::Tx;
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
        &["ChargeSucceeded", "ChargeFailed", "RiskRuleSet", "CreditScoreChanged"]
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
                    store::contracts::record_successes(tx, std::mem::take(&mut successes)).await?;
                    let Some(run) = store::contracts::count_failure(tx, &f.contract_id).await? else { continue };
                    let failures = u32::try_from(run.consecutive_failures).unwrap_or(u32::MAX);
                    let status = store::contracts::status_of(&run.state);
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
                EventKind::CreditScoreChanged(c) => {
                    tx.execute(
                        "INSERT INTO contracts_merchant_credit (merchant_id, score) VALUES ($1, $2)
                         ON CONFLICT (merchant_id) DO UPDATE SET score = excluded.score",
                        &[c.merchant_id.as_str().into(), autodebit_eventstore::Value::Int(c.score)],
                    )
                    .await?;
                }
                EventKind::RiskRuleSet(r) => {
                    autodebit_runtime::risk_rules::write(tx, "contracts_risk_rules", r).await?;
                }
                _ => {}
            }
        }
        Ok(store::contracts::record_successes(tx, successes).await?)
    }
}
