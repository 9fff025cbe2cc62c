//! The clean-up job, woken by the platform clock (and every few seconds): contracts past
//! their validity expire (`domain::validity`); contracts unused for the idle period are
//! flagged, the payer told, and terminated if still unused when the notice period has passed
//! (`domain::zombie`); signing sessions past their time expire.
use crate::app::contracts::{AppError, Contracts};
use crate::app::signing::{Signing, StepError};
use crate::store;
use autodebit_domain::contract::{ContractCommand, TerminationMode};
use autodebit_domain::signing::SigningCommand;
use autodebit_domain::zombie::{self, ZombiePolicy};
use autodebit_domain::{ContractId, clock::from_millis};
use autodebit_runtime::codec::Cause;
use std::time::Duration;
use tonic::Status;

/// At most this many contracts (or sessions) per sweep and pass.
const BATCH: i64 = 500;
/// How often the job runs when the clock does not wake it.
const PERIOD: Duration = Duration::from_secs(5);

pub fn spawn(app: Contracts, signing: Signing, zombies: ZombiePolicy) {
    tokio::spawn(async move {
        let platform = app.platform.clone();
        let mut moved = platform.clock.watch();
        loop {
            if let Err(e) = run_once(&app, &zombies).await {
                tracing::error!(error = format!("{e:#}"), "contract clean-up failed; retrying");
            }
            if let Err(e) = expire_sessions(&signing).await {
                tracing::error!(error = format!("{e:#}"), "expiring signing sessions failed; retrying");
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(PERIOD) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// One pass; returns how many contracts it changed. Each sweep reads only what its rule makes
/// due, through an index of its own.
pub async fn run_once(app: &Contracts, zombies: &ZombiePolicy) -> anyhow::Result<usize> {
    let now = app.platform.clock.now();
    let store = &app.platform.store;
    let mut changed = 0;

    for id in store::contracts::due_to_expire(store, now.timestamp_millis(), BATCH).await? {
        changed += act(app, &id, ContractCommand::Expire).await?;
    }

    let cutoff = zombies.idle_cutoff(now).timestamp_millis();
    for row in store::contracts::idle_since(store, cutoff, BATCH).await? {
        let command = ContractCommand::FlagZombie { idle_since: from_millis(row.idle_since_ms) };
        changed += act(app, &row.contract_id, command).await?;
    }

    let cutoff = zombies.notice_cutoff(now).timestamp_millis();
    for id in store::contracts::flagged_by(store, cutoff, BATCH).await? {
        let command =
            ContractCommand::Terminate { mode: TerminationMode::Platform, remark: zombie::UNUSED_REMARK.into() };
        changed += act(app, &id, command).await?;
    }
    Ok(changed)
}

async fn act(app: &Contracts, raw: &str, command: ContractCommand) -> anyhow::Result<usize> {
    let Ok(id) = ContractId::parse(raw) else { return Ok(0) };
    let cause = Cause::request(format!("cleanup/{id}"));
    match app.execute(id, None, command, &cause).await {
        Ok(_) => Ok(1),
        // Ended or changed by someone else meanwhile: the next pass sees the new state.
        Err(AppError::Rule(_) | AppError::VersionMismatch { .. }) => Ok(0),
        Err(AppError::Store(e)) if e.is_conflict() => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Expires open sessions past their time; returns how many it ended.
pub async fn expire_sessions(signing: &Signing) -> anyhow::Result<usize> {
    let store = &signing.contracts.platform.store;
    let now = signing.contracts.platform.clock.now_ms();
    let ttl_ms = i64::try_from(signing.ttl().as_millis()).unwrap_or(i64::MAX);
    let mut n = 0;
    for id in store::sessions::open_since(store, now.saturating_sub(ttl_ms), BATCH).await? {
        let cause = Cause::request(format!("expire/{id}"));
        match signing.step(&id, SigningCommand::Expire, &cause).await {
            Ok(l) if l.session.status.is_final() => n += 1,
            Ok(_) | Err(StepError::Rule(_)) | Err(StepError::NotFound) => {}
            Err(e) => {
                return Err(anyhow::anyhow!("expiring session {id}: {}", Status::from(e).message().to_string()));
            }
        }
        store::sessions::mark_ended(store, &id).await?;
    }
    Ok(n)
}
