//! Periodic clean-up by the platform clock: contracts past their validity expire; contracts
//! unused for a long time are flagged (the payer is told) and, if still unused after the
//! notice period, terminated.
use crate::app::{AppError, Contracts};
use autodebit_domain::contract::{ContractCommand, TerminationMode};
use autodebit_domain::{ContractId, clock::from_millis};
use autodebit_eventstore::Value;
use autodebit_runtime::codec::Cause;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ZombiePolicy {
    /// No successful charge for this long flags a contract.
    pub idle_after: Duration,
    /// A flagged contract still unused this long after the notice is terminated.
    pub notice_period: Duration,
}

impl Default for ZombiePolicy {
    fn default() -> Self {
        ZombiePolicy { idle_after: Duration::from_secs(180 * 86_400), notice_period: Duration::from_secs(30 * 86_400) }
    }
}

const BATCH: i64 = 500;

pub fn spawn(app: Contracts, signing: crate::signing::Signing, zombies: ZombiePolicy) {
    tokio::spawn(async move {
        let platform = app.platform.clone();
        let mut moved = platform.clock.watch();
        loop {
            if let Err(e) = run_once(&app, &zombies).await {
                tracing::error!(error = format!("{e:#}"), "contract clean-up failed; retrying");
            }
            if let Err(e) = signing.expire_due().await {
                tracing::error!(error = format!("{e:#}"), "expiring signing sessions failed; retrying");
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// One pass; returns how many contracts it changed.
pub async fn run_once(app: &Contracts, zombies: &ZombiePolicy) -> anyhow::Result<usize> {
    let now = app.platform.clock.now_ms();
    let idle_ms = i64::try_from(zombies.idle_after.as_millis()).unwrap_or(i64::MAX);
    let notice_ms = i64::try_from(zombies.notice_period.as_millis()).unwrap_or(i64::MAX);
    let store = &app.platform.store;
    let mut changed = 0;

    let expired = store
        .query(
            "SELECT contract_id FROM contracts_contracts
             WHERE state IN ('active', 'suspended') AND expires_at_ms > 0 AND expires_at_ms <= $1 LIMIT $2",
            &[Value::Int(now), Value::Int(BATCH)],
        )
        .await?;
    for row in &expired {
        changed += act(app, row.text(0), ContractCommand::Expire).await?;
    }

    // The WHERE's expression is the one `contracts_contracts_idle` (migration 5) indexes,
    // word for word: written otherwise, the planner cannot use that index.
    let idle = store
        .query(
            "SELECT contract_id, CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END
             FROM contracts_contracts
             WHERE state = 'active' AND zombie_flagged_at_ms = 0
               AND (CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END) <= $1
             LIMIT $2",
            &[Value::Int(now.saturating_sub(idle_ms)), Value::Int(BATCH)],
        )
        .await?;
    for row in &idle {
        let since = from_millis(row.i64(1).unwrap_or(0));
        changed += act(app, row.text(0), ContractCommand::FlagZombie { idle_since: since }).await?;
    }

    let unused = store
        .query(
            "SELECT contract_id FROM contracts_contracts
             WHERE state IN ('active', 'suspended') AND zombie_flagged_at_ms > 0 AND zombie_flagged_at_ms <= $1 LIMIT $2",
            &[Value::Int(now.saturating_sub(notice_ms)), Value::Int(BATCH)],
        )
        .await?;
    for row in &unused {
        let remark = "unused: no successful charge since the notice".to_string();
        changed +=
            act(app, row.text(0), ContractCommand::Terminate { mode: TerminationMode::Platform, remark }).await?;
    }
    Ok(changed)
}

async fn act(app: &Contracts, raw: Option<&str>, command: ContractCommand) -> anyhow::Result<usize> {
    let Some(id) = raw.and_then(|r| ContractId::parse(r).ok()) else { return Ok(0) };
    let cause = Cause::request(format!("cleanup/{id}"));
    match app.execute(id, None, command, &cause).await {
        Ok(_) => Ok(1),
        // Ended or changed by someone else meanwhile: the next pass sees the new state.
        Err(AppError::Rule(_) | AppError::VersionMismatch { .. }) => Ok(0),
        Err(AppError::Store(e)) if e.is_conflict() => Ok(0),
        Err(e) => Err(e.into()),
    }
}
