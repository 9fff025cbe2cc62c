//! Load, decide, append: the one place that coordinates the log and the contract rules.
use autodebit_domain::contract::{self, ContractCommand, ContractError, ContractEvent, ContractState, TerminationMode};
use autodebit_domain::{ContractId, Cycle, MerchantId, Money, PayerId};
use autodebit_eventstore::{ExpectedVersion, StoreError};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Rule(#[from] ContractError),
    #[error("contract {0} not found")]
    NotFound(ContractId),
    #[error("contract {id} is at version {actual}, not {expected}")]
    VersionMismatch { id: ContractId, expected: u64, actual: u64 },
    #[error("idempotency_key was already used for a different contract")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated signing request.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub amount_per_cycle: Money,
    pub cycle: Cycle,
    pub merchant_contract_code: String,
    pub idempotency_key: Option<String>,
}

#[derive(Clone)]
pub struct Contracts {
    platform: Platform,
}

impl Contracts {
    pub fn new(platform: Platform) -> Self {
        Contracts { platform }
    }

    /// The contract's state and stream version.
    pub async fn load(&self, id: ContractId) -> Result<(ContractState, u64), AppError> {
        let records = self.platform.store.read_stream(&id.stream(), 0).await?;
        let version = records.last().map(|r| r.version).unwrap_or(0);
        let state = records
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| codec::contract_event_from_pb(&d.kind))
            .fold(ContractState::Unsigned, |s, e| contract::apply(s, &e));
        Ok((state, version))
    }

    pub async fn get(&self, id: ContractId) -> Result<(contract::Contract, ContractState, u64), AppError> {
        let (state, version) = self.load(id).await?;
        match &state {
            ContractState::Unsigned => Err(AppError::NotFound(id)),
            ContractState::Active(c) | ContractState::Terminated(c) => Ok((c.clone(), state.clone(), version)),
        }
    }

    /// Signs a contract. With an idempotency key the id derives from it, so a repeated request
    /// finds and returns the original instead of signing twice.
    pub async fn sign(
        &self,
        req: SignRequest,
        cause: &Cause,
    ) -> Result<(contract::Contract, ContractState, u64), AppError> {
        let id = match &req.idempotency_key {
            Some(key) => ContractId::from_idempotency_key(&req.merchant_id, key),
            None => ContractId::generate(),
        };
        let command = ContractCommand::Sign {
            contract_id: id,
            merchant_id: req.merchant_id.clone(),
            payer_id: req.payer_id.clone(),
            amount_per_cycle: req.amount_per_cycle,
            cycle: req.cycle,
            merchant_contract_code: req.merchant_contract_code.clone(),
        };
        let events = contract::decide(&ContractState::Unsigned, command, self.platform.clock.now())?;
        match self.append(id, ExpectedVersion::NoStream, &events, cause).await {
            Ok(()) => {}
            Err(AppError::Store(e)) if e.is_conflict() && req.idempotency_key.is_some() => {
                let (existing, state, version) = self.get(id).await?;
                let same = existing.merchant_id == req.merchant_id
                    && existing.payer_id == req.payer_id
                    && existing.amount_per_cycle == req.amount_per_cycle
                    && existing.cycle == req.cycle
                    && existing.merchant_contract_code == req.merchant_contract_code;
                return if same { Ok((existing, state, version)) } else { Err(AppError::IdempotencyMismatch) };
            }
            Err(e) => return Err(e),
        }
        self.get(id).await
    }

    pub async fn terminate(
        &self,
        id: ContractId,
        mode: TerminationMode,
        remark: String,
        expected_version: Option<u64>,
        cause: &Cause,
    ) -> Result<(contract::Contract, ContractState, u64), AppError> {
        let (state, version) = self.load(id).await?;
        if matches!(state, ContractState::Unsigned) {
            return Err(AppError::NotFound(id));
        }
        if let Some(expected) = expected_version {
            if expected != version {
                return Err(AppError::VersionMismatch { id, expected, actual: version });
            }
        }
        let events = contract::decide(&state, ContractCommand::Terminate { mode, remark }, self.platform.clock.now())?;
        self.append(id, ExpectedVersion::Exact(version), &events, cause).await?;
        self.get(id).await
    }

    async fn append(
        &self,
        id: ContractId,
        expected: ExpectedVersion,
        events: &[ContractEvent],
        cause: &Cause,
    ) -> Result<(), AppError> {
        let now = self.platform.clock.now_ms();
        let encoded = events.iter().map(|e| codec::encode(codec::contract_event_to_pb(e), cause, now)).collect();
        self.platform.store.append(&id.stream(), expected, encoded).await?;
        Ok(())
    }
}
