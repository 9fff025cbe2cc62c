//! Contracts: signing (directly or under an idempotency key), changes, and the one place that
//! runs contract commands through the repository with the contracts table kept in step.
use crate::store;
use autodebit_domain::contract::{Contract, ContractCommand, ContractError, ContractEvent, ContractState};
use autodebit_domain::modification::{self, Calendar};
use autodebit_domain::plan::ModificationRule;
use autodebit_domain::{ContractId, Cycle, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId, validity};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::grpc::invalid;
use autodebit_runtime::repository::{self, Hook, VersionMismatch};
use tonic::Status;

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

#[derive(Clone)]
pub struct Contracts {
    pub(crate) platform: Platform,
}

/// A validated request to sign a contract directly (without a signing session).
pub struct SignRequest {
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub amount_per_cycle: Money,
    pub cycle: Cycle,
    pub merchant_contract_code: String,
    pub plan_id: String,
    pub idempotency_key: String,
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

    pub async fn get(&self, id: ContractId) -> Result<(Contract, u64), AppError> {
        match self.load(id).await? {
            (Some(c), v) => Ok((c, v)),
            (None, _) => Err(AppError::NotFound(id)),
        }
    }

    /// The contract the merchant knows by its own contract code.
    pub async fn by_code(&self, merchant: &MerchantId, code: &str) -> Result<Option<String>, AppError> {
        Ok(store::contracts::by_code(&self.platform.store, merchant, code).await?)
    }

    /// A merchant's contracts after `after` by id, filtered by stored status, payer and plan
    /// ("": any), and how many rows were read (one more than `limit` when there are more).
    pub async fn list(
        &self,
        merchant: &MerchantId,
        after: &str,
        status: &str,
        payer: &str,
        plan: &str,
        limit: i64,
    ) -> Result<(Vec<(Contract, u64)>, usize), AppError> {
        let ids = store::contracts::list(&self.platform.store, merchant, after, status, payer, plan, limit + 1).await?;
        let mut contracts = Vec::new();
        for raw in ids.iter().take(limit as usize) {
            let id = ContractId::parse(raw)
                .map_err(|e| StoreError::Invalid(format!("contracts_contracts holds {raw:?}: {e}")))?;
            contracts.push(self.get(id).await?);
        }
        Ok((contracts, ids.len()))
    }

    /// The contract a sign request with this idempotency key signed, if one did. Contracts
    /// signed before the keys were stored have the id derived from their key
    /// (`ContractId::from_idempotency_key`), and are found by it.
    pub async fn signed_under_key(&self, merchant: &MerchantId, key: &str) -> Result<Option<ContractId>, AppError> {
        if let Some(raw) = store::contracts::signed_under_key(&self.platform.store, merchant, key).await? {
            let id = ContractId::parse(&raw)
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
        if !store::contracts::claim_key(&mut tx, merchant, key, id).await? {
            return Ok(None);
        }
        let out = self.execute_in(&mut tx, id, None, command, cause).await?;
        tx.commit().await?;
        Ok(Some(out))
    }

    /// Signs a contract directly. A repeated request with its idempotency key gets the
    /// original contract; the key with another request is refused.
    pub async fn sign(&self, r: SignRequest, cause: &Cause) -> Result<(Contract, u64), Status> {
        crate::app::merchants::require_signing_allowed(&self.platform, &r.merchant_id).await?;
        let now = self.platform.clock.now();
        let mut expires_at = None;
        if !r.plan_id.is_empty() {
            let (_, plan) = crate::app::plans::load(&self.platform, &r.plan_id)
                .await?
                .ok_or_else(|| invalid("plan_id", format!("plan {} not found", r.plan_id)))?;
            if plan.merchant_id != r.merchant_id {
                return Err(invalid("plan_id", "belongs to another merchant"));
            }
            if !plan.allows_amount(r.amount_per_cycle) {
                return Err(invalid(
                    "amount_per_cycle.minor_units",
                    format!("is above the plan's per-charge cap of {}", plan.per_charge_cap),
                ));
            }
            expires_at = validity::expires_at(now, plan.validity_days);
        }
        let key = r.idempotency_key.as_str();
        let repeated = async |id: ContractId| -> Result<(Contract, u64), Status> {
            let (c, v) = self.get(id).await?;
            let same = c.merchant_id == r.merchant_id
                && c.payer_id == r.payer_id
                && c.amount_per_cycle == r.amount_per_cycle
                && c.cycle == r.cycle
                && c.merchant_contract_code == r.merchant_contract_code
                && c.plan_id == r.plan_id;
            if same {
                Ok((c, v))
            } else {
                Err(Status::already_exists("idempotency_key was already used for a different contract"))
            }
        };
        if !key.is_empty()
            && let Some(id) = self.signed_under_key(&r.merchant_id, key).await?
        {
            return repeated(id).await;
        }
        // Time-ordered: contracts signed around the same time, and everything keyed by them
        // (charges, notices, schedules), sit together in the indexes. Under a key the rest is
        // derived, so the same imports on a test clock sign the same ids (and charges).
        let id = if key.is_empty() {
            ContractId::generate()
        } else {
            ContractId::for_import(&r.merchant_id, key, now.timestamp_millis())
        };
        let command = ContractCommand::Sign {
            contract_id: id,
            merchant_id: r.merchant_id.clone(),
            payer_id: r.payer_id.clone(),
            amount_per_cycle: r.amount_per_cycle,
            cycle: r.cycle,
            merchant_contract_code: r.merchant_contract_code.clone(),
            plan_id: r.plan_id.clone(),
            expires_at,
            // Signed without a session: no phone or language known.
            payer_phone: String::new(),
            language: String::new(),
        };
        let signed = if key.is_empty() {
            self.execute(id, None, command, cause).await.map(Some)
        } else {
            self.sign_under_key(&r.merchant_id, key, id, command, cause).await
        };
        match signed? {
            Some(out) => Ok(out),
            // Another request with the key signed first, between the look and the write.
            None => match self.signed_under_key(&r.merchant_id, key).await? {
                Some(id) => repeated(id).await,
                None => Err(Status::aborted("idempotency_key is being used by a request that did not finish; retry")),
            },
        }
    }

    /// Changes a contract's amount and cycle: never above its plan's cap (without a plan, the
    /// platform's), effective as the plan's modification rule says, with a notice to the payer
    /// dated in the merchant's zone.
    pub async fn modify(
        &self,
        id: ContractId,
        expected_version: Option<u64>,
        amount: Money,
        new_cycle: Option<Cycle>,
        cause: &Cause,
    ) -> Result<(Contract, u64), Status> {
        let now = self.platform.clock.now();
        let (c, _) = self.get(id).await?;
        let plan = match c.plan_id.as_str() {
            "" => None,
            p => crate::app::plans::load(&self.platform, p).await?.map(|(_, plan)| plan),
        };
        let tz = crate::app::merchants::zone(&self.platform, &c.merchant_id).await?;
        let cycle = new_cycle.unwrap_or(c.cycle);
        let cap = plan.as_ref().map(|p| p.per_charge_cap).unwrap_or(Money::new(MAX_CHARGE_CNY_FEN, amount.currency()));
        let rule = plan.as_ref().map(|p| p.modification_rule).unwrap_or(ModificationRule::NextCycle);
        let calendar = modification::calendar(&c.cycle_history, now, &tz).unwrap_or(Calendar {
            cycle: c.cycle,
            anchor: c.signed_at,
            anchor_period: 0,
        });
        let effective_at = modification::effective_at(rule, &calendar, now, &tz);
        let notice = modification::notice(rule, effective_at, (amount, cycle), (c.amount_per_cycle, c.cycle), &tz);
        let command = ContractCommand::Modify { amount_per_cycle: amount, cycle, cap, effective_at, notice };
        Ok(self.execute(id, expected_version, command, cause).await?)
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
pub(crate) struct ContractsTable;

impl Hook<Contract> for ContractsTable {
    type Error = AppError;

    async fn on_events(&self, tx: &mut Tx, state: &ContractState, events: &[ContractEvent]) -> Result<(), AppError> {
        let Some(c) = state else { return Ok(()) };
        for e in events {
            match e {
                ContractEvent::Signed { .. } => match store::contracts::insert(tx, c).await {
                    Err(e) if store::is_unique_violation(&e) => {
                        return Err(AppError::CodeTaken(c.merchant_contract_code.clone()));
                    }
                    other => other?,
                },
                ContractEvent::ZombieFlagged { at, .. } => {
                    store::contracts::set_zombie_flagged(tx, c.contract_id, at.timestamp_millis()).await?
                }
                ContractEvent::ExpiryWarned { at, .. } => {
                    store::contracts::set_expiry_warned(tx, c.contract_id, at.timestamp_millis()).await?
                }
                ContractEvent::Modified { .. } => {}
                ContractEvent::Suspended { .. }
                | ContractEvent::Resumed { .. }
                | ContractEvent::Terminated { .. }
                | ContractEvent::Expired { .. } => store::contracts::set_status(tx, c.contract_id, c.status).await?,
            }
        }
        Ok(())
    }
}
