//! The charge aggregate: one due charge, from scheduled to its single outcome.
use crate::{ChargeId, ContractId, MerchantId, Money, PayerId, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeEvent {
    Scheduled {
        charge_id: ChargeId,
        contract_id: ContractId,
        merchant_id: MerchantId,
        payer_id: PayerId,
        amount: Money,
        period: u32,
        due_at: Timestamp,
    },
    Succeeded {
        provider_transaction_id: String,
        at: Timestamp,
    },
    Failed {
        provider_code: String,
        message: String,
        retryable: bool,
        at: Timestamp,
    },
    /// Attempt `attempt` is about to go to `provider` as `out_trade_no`.
    AttemptStarted {
        attempt: u32,
        out_trade_no: String,
        provider: String,
        at: Timestamp,
    },
    /// A retryable failure is tried again: attempt `attempt` (the first is 1).
    RetryScheduled {
        attempt: u32,
        at: Timestamp,
    },
    /// Refused by a rule (a limit, the contract's state), before or instead of reaching the
    /// provider. It carries the charge's terms, since a charge refused at issue has no
    /// `Scheduled` before it.
    Rejected {
        issue: Issue,
        rule: String,
        detail: String,
        at: Timestamp,
    },
}

/// What a charge is for: enough to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub charge_id: ChargeId,
    pub contract_id: ContractId,
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub amount: Money,
    pub period: u32,
    pub due_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeCommand {
    Schedule {
        charge_id: ChargeId,
        contract_id: ContractId,
        merchant_id: MerchantId,
        payer_id: PayerId,
        amount: Money,
        period: u32,
        due_at: Timestamp,
    },
    RecordSuccess {
        provider_transaction_id: String,
    },
    RecordFailure {
        provider_code: String,
        message: String,
        retryable: bool,
    },
    /// Sends the current attempt to `provider` (once per attempt).
    StartAttempt {
        provider: String,
    },
    /// Tries a charge that failed retryably again.
    Retry,
    /// Refuses a charge: at issue (`issue` given, no charge yet) or after scheduling.
    Reject {
        issue: Option<Issue>,
        rule: String,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    Scheduled,
    Succeeded,
    Failed,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub charge_id: ChargeId,
    pub contract_id: ContractId,
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub amount: Money,
    pub period: u32,
    pub due_at: Timestamp,
    pub status: ChargeStatus,
    pub provider_transaction_id: Option<String>,
    /// The provider's code, or the rule that rejected the charge.
    pub code: Option<String>,
    pub message: Option<String>,
    /// Which attempt this is (the first is 1).
    pub attempt: u32,
    /// Whether the last failure may be retried.
    pub retryable: bool,
    /// The attempt last sent to the provider (0: none yet), and its order number.
    pub started: u32,
    pub out_trade_no: Option<String>,
}

/// `None` until the charge is scheduled.
pub type ChargeState = Option<Charge>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    #[error("the charge already exists")]
    AlreadyScheduled,
    #[error("the charge does not exist")]
    NotScheduled,
    #[error("the charge already has its outcome ({0:?})")]
    AlreadyEnded(ChargeStatus),
    #[error("only a charge whose last attempt failed retryably can be retried")]
    NotRetryable,
    #[error("attempt {0} was started already")]
    AlreadyStarted(u32),
}

pub fn decide(state: &ChargeState, command: ChargeCommand, now: Timestamp) -> Result<Vec<ChargeEvent>, ChargeError> {
    match (state, command) {
        (None, ChargeCommand::Schedule { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at }) => {
            Ok(vec![ChargeEvent::Scheduled { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at }])
        }
        (None, ChargeCommand::Reject { issue: Some(issue), rule, detail }) => {
            Ok(vec![ChargeEvent::Rejected { issue, rule, detail, at: now }])
        }
        (None, _) => Err(ChargeError::NotScheduled),
        (Some(_), ChargeCommand::Schedule { .. }) => Err(ChargeError::AlreadyScheduled),
        (Some(c), ChargeCommand::Retry) => {
            if c.status == ChargeStatus::Failed && c.retryable {
                Ok(vec![ChargeEvent::RetryScheduled { attempt: c.attempt + 1, at: now }])
            } else {
                Err(ChargeError::NotRetryable)
            }
        }
        (Some(c), _) if c.status != ChargeStatus::Scheduled => Err(ChargeError::AlreadyEnded(c.status)),
        (Some(c), ChargeCommand::StartAttempt { provider }) => {
            if c.started == c.attempt {
                return Err(ChargeError::AlreadyStarted(c.attempt));
            }
            Ok(vec![ChargeEvent::AttemptStarted {
                attempt: c.attempt,
                out_trade_no: c.charge_id.out_trade_no(c.attempt),
                provider,
                at: now,
            }])
        }
        (Some(_), ChargeCommand::RecordSuccess { provider_transaction_id }) => {
            Ok(vec![ChargeEvent::Succeeded { provider_transaction_id, at: now }])
        }
        (Some(_), ChargeCommand::RecordFailure { provider_code, message, retryable }) => {
            Ok(vec![ChargeEvent::Failed { provider_code, message, retryable, at: now }])
        }
        (Some(c), ChargeCommand::Reject { rule, detail, .. }) => {
            Ok(vec![ChargeEvent::Rejected { issue: c.issue(), rule, detail, at: now }])
        }
    }
}

impl Charge {
    pub fn issue(&self) -> Issue {
        Issue {
            charge_id: self.charge_id,
            contract_id: self.contract_id,
            merchant_id: self.merchant_id.clone(),
            payer_id: self.payer_id.clone(),
            amount: self.amount,
            period: self.period,
            due_at: self.due_at,
        }
    }
}

pub fn apply(state: ChargeState, event: &ChargeEvent) -> ChargeState {
    match (state, event) {
        (None, ChargeEvent::Rejected { issue, rule, detail, .. }) => Some(Charge {
            charge_id: issue.charge_id,
            contract_id: issue.contract_id,
            merchant_id: issue.merchant_id.clone(),
            payer_id: issue.payer_id.clone(),
            amount: issue.amount,
            period: issue.period,
            due_at: issue.due_at,
            status: ChargeStatus::Rejected,
            provider_transaction_id: None,
            code: Some(rule.clone()),
            message: Some(detail.clone()),
            attempt: 0,
            retryable: false,
            started: 0,
            out_trade_no: None,
        }),
        (None, ChargeEvent::Scheduled { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at }) => {
            Some(Charge {
                charge_id: *charge_id,
                contract_id: *contract_id,
                merchant_id: merchant_id.clone(),
                payer_id: payer_id.clone(),
                amount: *amount,
                period: *period,
                due_at: *due_at,
                status: ChargeStatus::Scheduled,
                provider_transaction_id: None,
                code: None,
                message: None,
                attempt: 1,
                retryable: false,
                started: 0,
                out_trade_no: None,
            })
        }
        (Some(mut c), ChargeEvent::RetryScheduled { attempt, .. })
            if c.status == ChargeStatus::Failed && c.retryable =>
        {
            c.status = ChargeStatus::Scheduled;
            c.attempt = *attempt;
            c.retryable = false;
            Some(c)
        }
        (Some(mut c), e) if c.status == ChargeStatus::Scheduled => {
            match e {
                ChargeEvent::Scheduled { .. } | ChargeEvent::RetryScheduled { .. } => {}
                ChargeEvent::AttemptStarted { attempt, out_trade_no, .. } => {
                    c.started = *attempt;
                    c.out_trade_no = Some(out_trade_no.clone());
                }
                ChargeEvent::Succeeded { provider_transaction_id, .. } => {
                    c.status = ChargeStatus::Succeeded;
                    c.provider_transaction_id = Some(provider_transaction_id.clone());
                }
                ChargeEvent::Failed { provider_code, message, retryable, .. } => {
                    c.status = ChargeStatus::Failed;
                    c.retryable = *retryable;
                    c.code = Some(provider_code.clone());
                    c.message = Some(message.clone());
                }
                ChargeEvent::Rejected { rule, detail, .. } => {
                    c.status = ChargeStatus::Rejected;
                    c.code = Some(rule.clone());
                    c.message = Some(detail.clone());
                }
            }
            Some(c)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use proptest::prelude::*;

    fn schedule() -> ChargeCommand {
        let contract_id = ContractId::generate();
        ChargeCommand::Schedule {
            charge_id: ChargeId::for_period(contract_id, 1),
            contract_id,
            merchant_id: MerchantId::parse("m").unwrap(),
            payer_id: PayerId::parse("p").unwrap(),
            amount: Money::cny(100),
            period: 1,
            due_at: from_millis(0),
        }
    }

    fn outcome(i: u8) -> ChargeCommand {
        match i % 4 {
            0 => ChargeCommand::RecordSuccess { provider_transaction_id: "tx".into() },
            1 => {
                ChargeCommand::RecordFailure { provider_code: "NOTENOUGH".into(), message: "".into(), retryable: true }
            }
            2 => ChargeCommand::Reject { issue: None, rule: "daily_count".into(), detail: "".into() },
            _ => schedule(),
        }
    }

    proptest! {
        /// Whatever commands arrive, a charge is scheduled once and ends at most once.
        #[test]
        fn one_schedule_and_one_outcome(cmds in proptest::collection::vec(0u8..4, 0..12)) {
            let mut state: ChargeState = None;
            let mut outcomes = 0;
            let mut schedules = 0;
            for c in cmds {
                if let Ok(events) = decide(&state, outcome(c), from_millis(5)) {
                    for e in &events {
                        match e {
                            ChargeEvent::Scheduled { .. } => schedules += 1,
                            _ => outcomes += 1,
                        }
                    }
                    state = events.iter().fold(state, apply);
                }
            }
            prop_assert!(schedules <= 1);
            prop_assert!(outcomes <= 1);
            prop_assert!(outcomes == 0 || schedules == 1);
        }
    }

    #[test]
    fn each_attempt_is_started_once_with_its_own_order_number() {
        let start = || ChargeCommand::StartAttempt { provider: "simulator".into() };
        let state = decide(&None, schedule(), from_millis(0)).unwrap().iter().fold(None, apply);
        let events = decide(&state, start(), from_millis(1)).unwrap();
        let state = events.iter().fold(state, apply);
        let first = state.as_ref().unwrap().out_trade_no.clone().unwrap();
        assert_eq!(decide(&state, start(), from_millis(2)), Err(ChargeError::AlreadyStarted(1)));
        let failed =
            ChargeCommand::RecordFailure { provider_code: "NOTENOUGH".into(), message: "".into(), retryable: true };
        let state = decide(&state, failed, from_millis(3)).unwrap().iter().fold(state, apply);
        let state = decide(&state, ChargeCommand::Retry, from_millis(4)).unwrap().iter().fold(state, apply);
        let state = decide(&state, start(), from_millis(5)).unwrap().iter().fold(state, apply);
        let c = state.unwrap();
        assert_eq!((c.attempt, c.started), (2, 2));
        assert_ne!(c.out_trade_no.unwrap(), first);
    }

    #[test]
    fn outcome_needs_a_schedule() {
        assert_eq!(decide(&None, outcome(0), from_millis(0)), Err(ChargeError::NotScheduled));
    }

    #[test]
    fn a_charge_refused_at_issue_is_final() {
        let ChargeCommand::Schedule { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at } =
            schedule()
        else {
            unreachable!()
        };
        let issue = Issue { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at };
        let refuse = ChargeCommand::Reject { issue: Some(issue), rule: "daily_count".into(), detail: "11 > 10".into() };
        let events = decide(&None, refuse, from_millis(1)).unwrap();
        let state = events.iter().fold(None, apply);
        assert_eq!(state.as_ref().unwrap().status, ChargeStatus::Rejected);
        assert!(decide(&state, outcome(0), from_millis(2)).is_err(), "nothing follows a refusal");
        assert!(decide(&state, schedule(), from_millis(2)).is_err());
    }
}
