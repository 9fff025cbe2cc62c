//! Load, decide, append: the one place that coordinates the log, the contracts table and the
//! contract rules.
use autodebit_domain::contract::{Contract, ContractCommand, ContractError, ContractEvent, ContractState, ContractStatus};
use autodebit_domain::{ContractId, MerchantId};
use autodebit_eventstore::{StoreError, Tx, Value};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::repository::{self, Hook, VersionMismatch};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Rule(#[from] ContractError),
    #[error("contract {0} not found")]
    NotFound(ContractId),
    #[error(transparent)]
    VersionMismatch(#[from] VersionMismatch),
    #[error("merchant_contract_code {0:?} is already used by another contract of this merchant")]
    CodeTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const STATUSES: [ContractStatus; 4] =
    [ContractStatus::Active, ContractStatus::Suspended, ContractStatus::Terminated, ContractStatus::Expired];

pub fn status_name(s: ContractStatus) -> &'static str {
    match s {
        ContractStatus::Active => "active",
        ContractStatus::Suspended => "suspended",
        ContractStatus::Terminated => "terminated",
        ContractStatus::Expired => "expired",
    }
}

/// The status a stored name stands for.
pub fn status_of(name: &str) -> Option<ContractStatus> {
    STATUSES.into_iter().find(|s| status_name(*s) == name)
}

#[derive(Clone)]
pub struct Contracts {
    pub(crate) platform: Platform,
}

impl Contracts {
    pub fn new(platform: Platform) -> Self {
        Contracts { platform }
    }

    /// The contract's state and stream version.
    pub async fn load(&self, id: ContractId) -> Result<(ContractState, u64), AppError> {
        let l = repository::load::<Contract>(&self.platform.store, &id.stream()).await?;
        Ok((l.state, l.version))
    }

    /// The contract's state and version as `tx` sees them (no second connection is taken: on
    /// PostgreSQL, signings that each held a pool connection while waiting for another to read
    /// their contract once used up the pool between them).
    pub async fn load_in(&self, tx: &mut Tx, id: ContractId) -> Result<(ContractState, u64), AppError> {
        let l = repository::load_in::<Contract>(tx, &id.stream()).await?;
        Ok((l.state, l.version))
    }

    pub async fn get(&self, id: ContractId) -> Result<(Contract, u64), AppError> {
        match self.load(id).await? {
            (Some(c), v) => Ok((c, v)),
            (None, _) => Err(AppError::NotFound(id)),
        }
    }

    /// The contract a sign request with this idempotency key signed, if one did. Contracts
    /// signed before the keys were stored have the id derived from their key
    /// (`ContractId::from_idempotency_key`), and are found by it.
    pub async fn signed_under_key(&self, merchant: &MerchantId, key: &str) -> Result<Option<ContractId>, AppError> {
        let rows = self
            .platform
            .store
            .query(
                "SELECT contract_id FROM contracts_idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2",
                &[Value::from(merchant.as_str()), Value::from(key)],
            )
            .await?;
        if let Some(raw) = rows.first().and_then(|r| r.text(0)) {
            let id = ContractId::parse(raw)
                .map_err(|e| StoreError::Invalid(format!("contracts_idempotency_keys holds {raw:?}: {e}")))?;
            return Ok(Some(id));
        }
        let derived = ContractId::from_idempotency_key(merchant, key);
        Ok(self.load(derived).await?.0.is_some().then_some(derived))
    }

    /// Signs contract `id` under an idempotency key, the key recorded in the same transaction.
    /// `None`: the key was taken meanwhile, by a request that signed first.
    pub async fn sign_under_key(
        &self,
        merchant: &MerchantId,
        key: &str,
        id: ContractId,
        command: ContractCommand,
        cause: &Cause,
    ) -> Result<Option<(Contract, u64)>, AppError> {
        let mut tx = self.platform.store.begin().await?;
        let claimed = tx
            .execute(
                "INSERT INTO contracts_idempotency_keys (merchant_id, idempotency_key, contract_id) VALUES ($1, $2, $3)
                 ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
                &[Value::from(merchant.as_str()), Value::from(key), Value::from(id.to_string())],
            )
            .await?;
        if claimed == 0 {
            return Ok(None);
        }
        let out = self.execute_in(&mut tx, id, None, command, cause).await?;
        tx.commit().await?;
        Ok(Some(out))
    }

    /// Runs a command against a contract in its own transaction.
    pub async fn execute(
        &self,
        id: ContractId,
        expected_version: Option<u64>,
        command: ContractCommand,
        cause: &Cause,
    ) -> Result<(Contract, u64), AppError> {
        let mut tx = self.platform.store.begin().await?;
        let out = self.execute_in(&mut tx, id, expected_version, command, cause).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Runs a command inside `tx` through the repository: decide on the stored state,
    /// append the events, keep the contracts table in step.
    pub async fn execute_in(
        &self,
        tx: &mut Tx,
        id: ContractId,
        expected_version: Option<u64>,
        command: ContractCommand,
        cause: &Cause,
    ) -> Result<(Contract, u64), AppError> {
        let now = self.platform.clock.now();
        let done = repository::execute_in::<Contract, _, AppError>(
            tx,
            &id.stream(),
            expected_version,
            command,
            now,
            cause,
            &ContractsTable,
        )
        .await
        .map_err(|e| match e {
            AppError::Rule(ContractError::NotSigned) => AppError::NotFound(id),
            AppError::VersionMismatch(VersionMismatch { actual: 0, .. }) => AppError::NotFound(id),
            other => other,
        })?;
        let c = done.state.ok_or(AppError::NotFound(id))?;
        Ok((c, done.version))
    }
}

/// Keeps `contracts_contracts` in step with the contract's events.
struct ContractsTable;

impl Hook<Contract> for ContractsTable {
    type Error = AppError;

    async fn on_events(&self, tx: &mut Tx, state: &ContractState, events: &[ContractEvent]) -> Result<(), AppError> {
        let Some(c) = state else { return Ok(()) };
        for e in events {
            sync_table(tx, c, e).await?;
        }
        Ok(())
    }
}

/// Keeps `contracts_contracts` in step with one event of `c` (the state after it).
async fn sync_table(tx: &mut Tx, c: &Contract, e: &ContractEvent) -> Result<(), AppError> {
    let id = Value::from(c.contract_id.to_string());
    match e {
        ContractEvent::Signed { .. } => {
            let res = tx
                .execute(
                    "INSERT INTO contracts_contracts (contract_id, merchant_id, merchant_contract_code, payer_id, plan_id,
                       state, signed_at_ms, expires_at_ms, last_success_at_ms, consecutive_failures, zombie_flagged_at_ms)
                     VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, 0, 0, 0)",
                    &[
                        id,
                        Value::from(c.merchant_id.to_string()),
                        Value::from(&c.merchant_contract_code),
                        Value::from(c.payer_id.to_string()),
                        Value::from(&c.plan_id),
                        Value::Int(c.signed_at.timestamp_millis()),
                        Value::Int(c.expires_at.map(|t| t.timestamp_millis()).unwrap_or(0)),
                    ],
                )
                .await;
            match res {
                Err(StoreError::Database(sqlx_err)) if is_unique_violation(&sqlx_err) => {
                    return Err(AppError::CodeTaken(c.merchant_contract_code.clone()));
                }
                other => {
                    other?;
                }
            }
        }
        ContractEvent::ZombieFlagged { at, .. } => {
            tx.execute(
                "UPDATE contracts_contracts SET zombie_flagged_at_ms = $1 WHERE contract_id = $2",
                &[Value::Int(at.timestamp_millis()), id],
            )
            .await?;
        }
        ContractEvent::Modified { .. } => {}
        ContractEvent::Suspended { .. }
        | ContractEvent::Resumed { .. }
        | ContractEvent::Terminated { .. }
        | ContractEvent::Expired { .. } => {
            tx.execute(
                "UPDATE contracts_contracts SET state = $1 WHERE contract_id = $2",
                &[Value::from(status_name(c.status)), id],
            )
            .await?;
        }
    }
    Ok(())
}

fn is_unique_violation(e: &autodebit_eventstore::SqlxError) -> bool {
    matches!(e, autodebit_eventstore::SqlxError::Database(d) if d.is_unique_violation())
}
