//! The contract aggregate: a payer's signed agreement with a merchant.
use crate::{ContractId, Cycle, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId, Timestamp};

/// Who ended a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationMode {
    Payer,
    Merchant,
    CustomerService,
    Provider,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractEvent {
    Signed {
        contract_id: ContractId,
        merchant_id: MerchantId,
        payer_id: PayerId,
        amount_per_cycle: Money,
        cycle: Cycle,
        merchant_contract_code: String,
        signed_at: Timestamp,
    },
    Terminated {
        contract_id: ContractId,
        mode: TerminationMode,
        remark: String,
        terminated_at: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractCommand {
    Sign {
        contract_id: ContractId,
        merchant_id: MerchantId,
        payer_id: PayerId,
        amount_per_cycle: Money,
        cycle: Cycle,
        merchant_contract_code: String,
    },
    Terminate {
        mode: TerminationMode,
        remark: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractState {
    /// No contract yet: the stream is empty.
    Unsigned,
    Active(Contract),
    Terminated(Contract),
}

/// What a signed contract holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub contract_id: ContractId,
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub amount_per_cycle: Money,
    pub cycle: Cycle,
    pub merchant_contract_code: String,
    pub signed_at: Timestamp,
    pub termination: Option<(TerminationMode, String, Timestamp)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("the contract is already signed")]
    AlreadySigned,
    #[error("the contract does not exist")]
    NotSigned,
    #[error("the contract is terminated, which is final")]
    AlreadyTerminated,
    #[error("amount_per_cycle {amount} is above the per-charge cap of {cap}")]
    AboveCap { amount: Money, cap: Money },
    #[error("amount_per_cycle must be positive")]
    NotPositive,
}

/// Decides what a command does to a contract; pure.
pub fn decide(
    state: &ContractState,
    command: ContractCommand,
    now: Timestamp,
) -> Result<Vec<ContractEvent>, ContractError> {
    match (state, command) {
        (
            ContractState::Unsigned,
            ContractCommand::Sign {
                contract_id,
                merchant_id,
                payer_id,
                amount_per_cycle,
                cycle,
                merchant_contract_code,
            },
        ) => {
            if amount_per_cycle.minor_units() <= 0 {
                return Err(ContractError::NotPositive);
            }
            // The platform's hard cap is stated in CNY; other currencies are held to the same
            // number of minor units until per-currency caps are configured.
            if amount_per_cycle.minor_units() > MAX_CHARGE_CNY_FEN {
                return Err(ContractError::AboveCap {
                    amount: amount_per_cycle,
                    cap: Money::new(MAX_CHARGE_CNY_FEN, amount_per_cycle.currency()),
                });
            }
            Ok(vec![ContractEvent::Signed {
                contract_id,
                merchant_id,
                payer_id,
                amount_per_cycle,
                cycle,
                merchant_contract_code,
                signed_at: now,
            }])
        }
        (ContractState::Unsigned, ContractCommand::Terminate { .. }) => Err(ContractError::NotSigned),
        (ContractState::Active(_) | ContractState::Terminated(_), ContractCommand::Sign { .. }) => {
            Err(ContractError::AlreadySigned)
        }
        (ContractState::Active(c), ContractCommand::Terminate { mode, remark }) => {
            Ok(vec![ContractEvent::Terminated { contract_id: c.contract_id, mode, remark, terminated_at: now }])
        }
        (ContractState::Terminated(_), ContractCommand::Terminate { .. }) => Err(ContractError::AlreadyTerminated),
    }
}

/// Folds one event into the state; events are facts, so this never fails. An event that
/// cannot follow the state (which `decide` never produces) leaves the state as it was.
pub fn apply(state: ContractState, event: &ContractEvent) -> ContractState {
    match (state, event) {
        (
            ContractState::Unsigned,
            ContractEvent::Signed {
                contract_id,
                merchant_id,
                payer_id,
                amount_per_cycle,
                cycle,
                merchant_contract_code,
                signed_at,
            },
        ) => ContractState::Active(Contract {
            contract_id: *contract_id,
            merchant_id: merchant_id.clone(),
            payer_id: payer_id.clone(),
            amount_per_cycle: *amount_per_cycle,
            cycle: *cycle,
            merchant_contract_code: merchant_contract_code.clone(),
            signed_at: *signed_at,
            termination: None,
        }),
        (ContractState::Active(mut c), ContractEvent::Terminated { mode, remark, terminated_at, .. }) => {
            c.termination = Some((*mode, remark.clone(), *terminated_at));
            ContractState::Terminated(c)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    fn sign(amount: i64) -> ContractCommand {
        ContractCommand::Sign {
            contract_id: ContractId::generate(),
            merchant_id: MerchantId::parse("m1").unwrap(),
            payer_id: PayerId::parse("p1").unwrap(),
            amount_per_cycle: Money::cny(amount),
            cycle: Cycle::Monthly,
            merchant_contract_code: "code-1".into(),
        }
    }

    fn terminate() -> ContractCommand {
        ContractCommand::Terminate { mode: TerminationMode::Payer, remark: "moving".into() }
    }

    fn run(state: ContractState, cmd: ContractCommand) -> Result<ContractState, ContractError> {
        let events = decide(&state, cmd, from_millis(1_000))?;
        Ok(events.iter().fold(state, apply))
    }

    #[test]
    fn sign_then_terminate() {
        let s = run(ContractState::Unsigned, sign(1_500)).unwrap();
        assert!(matches!(s, ContractState::Active(_)));
        let s = run(s, terminate()).unwrap();
        let ContractState::Terminated(c) = s.clone() else { panic!("expected terminated, got {s:?}") };
        assert_eq!(c.termination.unwrap().0, TerminationMode::Payer);
        assert_eq!(run(s.clone(), terminate()), Err(ContractError::AlreadyTerminated));
        assert_eq!(run(s, sign(1)), Err(ContractError::AlreadySigned));
    }

    #[test]
    fn cap_and_positivity() {
        assert!(run(ContractState::Unsigned, sign(MAX_CHARGE_CNY_FEN)).is_ok());
        assert!(matches!(
            run(ContractState::Unsigned, sign(MAX_CHARGE_CNY_FEN + 1)),
            Err(ContractError::AboveCap { .. })
        ));
        assert_eq!(run(ContractState::Unsigned, sign(0)), Err(ContractError::NotPositive));
    }

    #[test]
    fn terminate_needs_a_contract() {
        assert_eq!(run(ContractState::Unsigned, terminate()), Err(ContractError::NotSigned));
    }
}
