//! The charge aggregate: one due charge, from scheduled to its single outcome, and the
//! refunds of a succeeded one.
//!
//! Refund rules (all in `decide`, property-tested below):
//! - only a succeeded charge is refunded, in its own currency, by a positive amount;
//! - what refunds hold of a charge (paid back, or being paid back) never exceeds what it took;
//!   a failed refund's amount is free again;
//! - a refund is asked for once: its id derives from the charge and the merchant's idempotency
//!   key ([`refund_id`]), and the same key for another amount is refused
//!   ([`Charge::repeated_refund`]);
//! - a refund ends once, succeeded or failed.
use crate::risk::{HoldReason, Releaser};
use crate::{ChargeId, ContractId, MerchantId, Money, PayerId, Timestamp};

/// Why a charge is due: what its id derives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reason {
    /// A fixed-cycle period (contract + period).
    #[default]
    Cycle,
    /// A usage period's metered total (contract + usage period).
    Usage,
    /// Asked for by the merchant (contract + its idempotency key).
    Trigger,
}

/// Where a charge came from, as its `Scheduled` event records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub reason: Reason,
    /// What the charge is for, in words (the merchant's, for a triggered charge).
    pub description: String,
}

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
        origin: Origin,
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
    /// A refund of `amount` is asked for.
    RefundRequested {
        refund_id: String,
        amount: Money,
        reason: String,
        /// Set for the refund of a second debit of this charge found by reconciliation: it
        /// pays back that debit, not the charge.
        duplicate: Option<Duplicate>,
        at: Timestamp,
    },
    RefundSucceeded {
        refund_id: String,
        provider_refund_id: String,
        at: Timestamp,
    },
    RefundFailed {
        refund_id: String,
        provider_code: String,
        message: String,
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
    /// Held by a charge-time risk rule instead of being scheduled (`crate::risk`): it waits for
    /// the payer's confirmation (on the step-up page `token` opens) or an operator's approval
    /// until `expires_at`. It carries the charge's terms, since nothing comes before it.
    Held {
        issue: Issue,
        origin: Origin,
        reason: HoldReason,
        token: String,
        expires_at: Timestamp,
        at: Timestamp,
    },
    /// The hold was lifted; a `Scheduled` follows (at once, or when the charge window opens).
    HoldReleased {
        by: Releaser,
        note: String,
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
        origin: Origin,
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
    /// Pays back `amount` of a succeeded charge.
    Refund {
        refund_id: String,
        amount: Money,
        reason: String,
    },
    /// Pays back a second debit of a succeeded charge that the provider's statement shows
    /// under another of its order numbers (a duplicate charge): the whole debit, apart from
    /// what the charge itself may still be refunded.
    RefundDuplicate {
        refund_id: String,
        duplicate: Duplicate,
        amount: Money,
    },
    RecordRefundSuccess {
        refund_id: String,
        provider_refund_id: String,
    },
    RecordRefundFailure {
        refund_id: String,
        provider_code: String,
        message: String,
    },
    /// Refuses a charge: at issue (`issue` given, no charge yet), while held, or after
    /// scheduling.
    Reject {
        issue: Option<Issue>,
        rule: String,
        detail: String,
    },
    /// Holds a charge at issue under a risk rule, for `HOLD_EXPIRY`.
    Hold {
        issue: Issue,
        origin: Origin,
        reason: HoldReason,
        token: String,
    },
    /// Lifts a hold; with `charge_now`, the charge is scheduled at once, otherwise later by
    /// `IssueReleased`.
    ReleaseHold {
        by: Releaser,
        note: String,
        charge_now: bool,
    },
    /// Schedules a released charge.
    IssueReleased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Held by a risk rule; not sent until released.
    Held,
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
    /// Refunds asked for, in order.
    pub refunds: Vec<Refund>,
    /// The risk hold it was issued under, if any (kept once released).
    pub hold: Option<Box<Hold>>,
}

/// A charge's risk hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Where the charge came from, for its `Scheduled` once released.
    pub origin: Origin,
    pub reason: HoldReason,
    pub token: String,
    pub expires_at: Timestamp,
    pub released: Option<Releaser>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Requested,
    Succeeded,
    Failed,
}

/// A refund of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: String,
    pub amount: Money,
    pub reason: String,
    /// The duplicate debit it pays back, if it pays back one instead of the charge.
    pub duplicate: Option<Duplicate>,
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// A debit of a charge beyond the one that succeeded: its own order number and the provider's
/// transaction id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub out_trade_no: String,
    pub transaction_id: String,
}

impl Charge {
    /// What refunds that have not failed hold of the charge: paid back, or being paid back.
    /// Refunds of duplicate debits hold nothing of it.
    pub fn refund_committed(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed && r.duplicate.is_none())
            .map(|r| r.amount.minor_units())
            .sum()
    }

    pub fn refund(&self, refund_id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }

    /// The sum of the refunds in `status`, in the charge's currency.
    pub fn refunds_in(&self, status: RefundStatus) -> Money {
        let minor = self.refunds.iter().filter(|r| r.status == status).map(|r| r.amount.minor_units()).sum();
        Money::new(minor, self.amount.currency())
    }

    /// A refund asked for again under an id it has already (the same idempotency key): the
    /// refund recorded, if it asked for the same amount; refused if it asked for another.
    /// `None` for a new refund.
    pub fn repeated_refund(&self, refund_id: &str, amount: Money) -> Option<Result<&Refund, ChargeError>> {
        let earlier = self.refund(refund_id)?;
        Some(if earlier.amount == amount {
            Ok(earlier)
        } else {
            Err(ChargeError::RefundKeyReused { earlier: earlier.amount, asked: amount })
        })
    }
}

/// A refund's id: the charge's, and a hash of the merchant's idempotency key. The same key is
/// the same refund; the charge is found from the refund ([`refunded_charge`]); the id fits
/// WeChat Pay's `out_refund_no` (64 characters), which a provider pays back once however often
/// it is sent.
pub fn refund_id(charge: ChargeId, idempotency_key: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x51c4_0e7a_2b6d_4f1e_9a08_3c5d_7e2f_1b90);
    let hash = uuid::Uuid::new_v5(&NAMESPACE, format!("{charge}\0{idempotency_key}").as_bytes());
    let charge_hex = charge.to_string();
    let charge_hex = charge_hex.trim_start_matches("ch_");
    format!("rf_{charge_hex}_{}", &hash.simple().to_string()[..16])
}

/// The charge a refund id names.
pub fn refunded_charge(refund_id: &str) -> Option<ChargeId> {
    let rest = refund_id.strip_prefix("rf_")?;
    let (charge, hash) = rest.split_once('_')?;
    (hash.len() == 16).then_some(())?;
    ChargeId::parse(&format!("ch_{charge}")).ok()
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
    #[error("only a succeeded charge can be refunded (this one is {0:?})")]
    NotRefundable(ChargeStatus),
    #[error("{asked} is more than the {left} left to refund of {charged}")]
    RefundTooLarge { asked: Money, left: Money, charged: Money },
    #[error("must be positive and in the charge's currency ({0})")]
    RefundAmount(Money),
    #[error("refund {0} exists already")]
    RefundExists(String),
    #[error("used for a refund of {earlier} of this charge, not {asked}")]
    RefundKeyReused { earlier: Money, asked: Money },
    #[error("refund {0} is not waiting for an outcome")]
    RefundNotPending(String),
    #[error("the charge is not held (it is {0:?})")]
    NotHeld(ChargeStatus),
    #[error("the hold was released already")]
    AlreadyReleased,
    #[error("the hold has not been released")]
    NotReleased,
}

/// Whether a refund `refund_id` of `amount` may be asked for at all: the charge succeeded, the
/// id is new, the amount positive and in the charge's currency.
fn refundable(c: &Charge, refund_id: &str, amount: Money) -> Result<(), ChargeError> {
    if c.status != ChargeStatus::Succeeded {
        return Err(ChargeError::NotRefundable(c.status));
    }
    if c.refund(refund_id).is_some() {
        return Err(ChargeError::RefundExists(refund_id.to_string()));
    }
    if amount.minor_units() <= 0 || amount.currency() != c.amount.currency() {
        return Err(ChargeError::RefundAmount(c.amount));
    }
    Ok(())
}

pub fn decide(state: &ChargeState, command: ChargeCommand, now: Timestamp) -> Result<Vec<ChargeEvent>, ChargeError> {
    match (state, command) {
        (
            None,
            ChargeCommand::Schedule { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at, origin },
        ) => Ok(vec![ChargeEvent::Scheduled {
            charge_id,
            contract_id,
            merchant_id,
            payer_id,
            amount,
            period,
            due_at,
            origin,
        }]),
        (None, ChargeCommand::Reject { issue: Some(issue), rule, detail }) => {
            Ok(vec![ChargeEvent::Rejected { issue, rule, detail, at: now }])
        }
        (None, ChargeCommand::Hold { issue, origin, reason, token }) => Ok(vec![ChargeEvent::Held {
            issue,
            origin,
            reason,
            token,
            expires_at: crate::risk::hold_expires_at(now),
            at: now,
        }]),
        (None, _) => Err(ChargeError::NotScheduled),
        (Some(c), ChargeCommand::ReleaseHold { by, note, charge_now }) => {
            let hold = held(c)?;
            if hold.released.is_some() {
                return Err(ChargeError::AlreadyReleased);
            }
            let mut events = vec![ChargeEvent::HoldReleased { by, note, at: now }];
            if charge_now {
                events.push(c.scheduled_from_hold(hold, now));
            }
            Ok(events)
        }
        (Some(c), ChargeCommand::IssueReleased) => {
            let hold = held(c)?;
            if hold.released.is_none() {
                return Err(ChargeError::NotReleased);
            }
            Ok(vec![c.scheduled_from_hold(hold, now)])
        }
        (Some(c), ChargeCommand::Reject { rule, detail, .. }) if c.status == ChargeStatus::Held => {
            Ok(vec![ChargeEvent::Rejected { issue: c.issue(), rule, detail, at: now }])
        }
        (Some(_), ChargeCommand::Hold { .. }) => Err(ChargeError::AlreadyScheduled),
        (Some(c), ChargeCommand::Refund { refund_id, amount, reason }) => {
            refundable(c, &refund_id, amount)?;
            let left = c.amount.minor_units() - c.refund_committed();
            if amount.minor_units() > left {
                return Err(ChargeError::RefundTooLarge {
                    asked: amount,
                    left: Money::new(left, c.amount.currency()),
                    charged: c.amount,
                });
            }
            Ok(vec![ChargeEvent::RefundRequested { refund_id, amount, reason, duplicate: None, at: now }])
        }
        (Some(c), ChargeCommand::RefundDuplicate { refund_id, duplicate, amount }) => {
            refundable(c, &refund_id, amount)?;
            let reason = format!("duplicate debit {}", duplicate.out_trade_no);
            Ok(vec![ChargeEvent::RefundRequested { refund_id, amount, reason, duplicate: Some(duplicate), at: now }])
        }
        (Some(c), ChargeCommand::RecordRefundSuccess { refund_id, provider_refund_id }) => match c.refund(&refund_id) {
            Some(r) if r.status == RefundStatus::Requested => {
                Ok(vec![ChargeEvent::RefundSucceeded { refund_id, provider_refund_id, at: now }])
            }
            _ => Err(ChargeError::RefundNotPending(refund_id)),
        },
        (Some(c), ChargeCommand::RecordRefundFailure { refund_id, provider_code, message }) => {
            match c.refund(&refund_id) {
                Some(r) if r.status == RefundStatus::Requested => {
                    Ok(vec![ChargeEvent::RefundFailed { refund_id, provider_code, message, at: now }])
                }
                _ => Err(ChargeError::RefundNotPending(refund_id)),
            }
        }
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

/// The hold of a charge that is held.
fn held(c: &Charge) -> Result<&Hold, ChargeError> {
    match &c.hold {
        Some(h) if c.status == ChargeStatus::Held => Ok(h),
        _ => Err(ChargeError::NotHeld(c.status)),
    }
}

impl Charge {
    /// The `Scheduled` of a released charge: its terms, due at `now`.
    fn scheduled_from_hold(&self, hold: &Hold, now: Timestamp) -> ChargeEvent {
        ChargeEvent::Scheduled {
            charge_id: self.charge_id,
            contract_id: self.contract_id,
            merchant_id: self.merchant_id.clone(),
            payer_id: self.payer_id.clone(),
            amount: self.amount,
            period: self.period,
            due_at: now,
            origin: hold.origin.clone(),
        }
    }

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
            refunds: Vec::new(),
            hold: None,
        }),
        (
            None,
            ChargeEvent::Scheduled { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at, .. },
        ) => Some(Charge {
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
            refunds: Vec::new(),
            hold: None,
        }),
        (Some(mut c), ChargeEvent::RetryScheduled { attempt, .. })
            if c.status == ChargeStatus::Failed && c.retryable =>
        {
            c.status = ChargeStatus::Scheduled;
            c.attempt = *attempt;
            c.retryable = false;
            Some(c)
        }
        (Some(mut c), ChargeEvent::RefundRequested { refund_id, amount, reason, duplicate, .. })
            if c.status == ChargeStatus::Succeeded =>
        {
            c.refunds.push(Refund {
                refund_id: refund_id.clone(),
                amount: *amount,
                reason: reason.clone(),
                duplicate: duplicate.clone(),
                status: RefundStatus::Requested,
                provider_refund_id: None,
                code: None,
                message: None,
            });
            Some(c)
        }
        (Some(mut c), ChargeEvent::RefundSucceeded { refund_id, provider_refund_id, .. }) => {
            if let Some(r) = c.refunds.iter_mut().find(|r| &r.refund_id == refund_id) {
                r.status = RefundStatus::Succeeded;
                r.provider_refund_id = Some(provider_refund_id.clone());
            }
            Some(c)
        }
        (Some(mut c), ChargeEvent::RefundFailed { refund_id, provider_code, message, .. }) => {
            if let Some(r) = c.refunds.iter_mut().find(|r| &r.refund_id == refund_id) {
                r.status = RefundStatus::Failed;
                r.code = Some(provider_code.clone());
                r.message = Some(message.clone());
            }
            Some(c)
        }
        (Some(mut c), e) if c.status == ChargeStatus::Scheduled => {
            match e {
                ChargeEvent::Scheduled { .. }
                | ChargeEvent::RetryScheduled { .. }
                | ChargeEvent::Held { .. }
                | ChargeEvent::HoldReleased { .. } => {}
                ChargeEvent::RefundRequested { .. }
                | ChargeEvent::RefundSucceeded { .. }
                | ChargeEvent::RefundFailed { .. } => {}
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
        (None, ChargeEvent::Held { issue, origin, reason, token, expires_at, .. }) => Some(Charge {
            charge_id: issue.charge_id,
            contract_id: issue.contract_id,
            merchant_id: issue.merchant_id.clone(),
            payer_id: issue.payer_id.clone(),
            amount: issue.amount,
            period: issue.period,
            due_at: issue.due_at,
            status: ChargeStatus::Held,
            provider_transaction_id: None,
            code: Some(reason.rule.clone()),
            message: Some(reason.detail.clone()),
            attempt: 0,
            retryable: false,
            started: 0,
            out_trade_no: None,
            refunds: Vec::new(),
            hold: Some(Box::new(Hold {
                origin: origin.clone(),
                reason: reason.clone(),
                token: token.clone(),
                expires_at: *expires_at,
                released: None,
            })),
        }),
        (Some(mut c), e) if c.status == ChargeStatus::Held => {
            match e {
                ChargeEvent::HoldReleased { by, .. } => {
                    if let Some(h) = c.hold.as_mut() {
                        h.released = Some(*by);
                    }
                }
                ChargeEvent::Scheduled { due_at, .. } => {
                    c.status = ChargeStatus::Scheduled;
                    c.attempt = 1;
                    c.due_at = *due_at;
                    c.code = None;
                    c.message = None;
                }
                ChargeEvent::Rejected { rule, detail, .. } => {
                    c.status = ChargeStatus::Rejected;
                    c.code = Some(rule.clone());
                    c.message = Some(detail.clone());
                }
                _ => {}
            }
            Some(c)
        }
        (state, _) => state,
    }
}

/// The charge aggregate (its refunds included), stream `charge-<id>`.
impl crate::Aggregate for Charge {
    type State = ChargeState;
    type Command = ChargeCommand;
    type Event = ChargeEvent;
    type Error = ChargeError;

    fn decide(state: &ChargeState, command: ChargeCommand, now: Timestamp) -> Result<Vec<ChargeEvent>, ChargeError> {
        decide(state, command, now)
    }

    fn apply(state: ChargeState, event: &ChargeEvent) -> ChargeState {
        apply(state, event)
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
            origin: Origin::default(),
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

    proptest! {
        /// Whatever refunds are asked for and however they end, what is refunded or being
        /// refunded never exceeds what the charge took.
        #[test]
        fn refunds_never_exceed_the_charge(steps in proptest::collection::vec((1i64..80, 0u8..3), 0..20)) {
            let mut state = decide(&None, schedule(), from_millis(0)).unwrap().iter().fold(None, apply);
            let ok = ChargeCommand::RecordSuccess { provider_transaction_id: "tx".into() };
            state = decide(&state, ok, from_millis(1)).unwrap().iter().fold(state, apply);
            for (i, (fen, end)) in steps.into_iter().enumerate() {
                let id = format!("rf{i}");
                let ask = ChargeCommand::Refund { refund_id: id.clone(), amount: Money::cny(fen), reason: String::new() };
                if let Ok(events) = decide(&state, ask, from_millis(2)) {
                    state = events.iter().fold(state, apply);
                    let end = match end {
                        0 => ChargeCommand::RecordRefundSuccess { refund_id: id, provider_refund_id: "r".into() },
                        1 => ChargeCommand::RecordRefundFailure { refund_id: id, provider_code: "X".into(), message: String::new() },
                        _ => continue,
                    };
                    state = decide(&state, end, from_millis(3)).unwrap().iter().fold(state, apply);
                }
                let c = state.as_ref().unwrap();
                prop_assert!(c.refund_committed() <= c.amount.minor_units());
            }
        }
    }

    #[test]
    fn outcome_needs_a_schedule() {
        assert_eq!(decide(&None, outcome(0), from_millis(0)), Err(ChargeError::NotScheduled));
    }

    #[test]
    fn a_charge_refused_at_issue_is_final() {
        let ChargeCommand::Schedule { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at, .. } =
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

    fn succeeded() -> ChargeState {
        let state = decide(&None, schedule(), from_millis(0)).unwrap().iter().fold(None, apply);
        let ok = ChargeCommand::RecordSuccess { provider_transaction_id: "tx".into() };
        decide(&state, ok, from_millis(1)).unwrap().iter().fold(state, apply)
    }

    fn ask(id: &str, fen: i64) -> ChargeCommand {
        ChargeCommand::Refund { refund_id: id.into(), amount: Money::cny(fen), reason: String::new() }
    }

    #[test]
    fn refund_rules() {
        // Only a succeeded charge.
        let scheduled = decide(&None, schedule(), from_millis(0)).unwrap().iter().fold(None, apply);
        assert_eq!(
            decide(&scheduled, ask("a", 10), from_millis(1)),
            Err(ChargeError::NotRefundable(ChargeStatus::Scheduled))
        );
        let state = succeeded();
        // A positive amount in the charge's currency.
        assert_eq!(decide(&state, ask("a", 0), from_millis(2)), Err(ChargeError::RefundAmount(Money::cny(100))));
        let usd = ChargeCommand::Refund {
            refund_id: "a".into(),
            amount: Money::new(10, crate::money::Currency::parse("USD").unwrap()),
            reason: String::new(),
        };
        assert_eq!(decide(&state, usd, from_millis(2)), Err(ChargeError::RefundAmount(Money::cny(100))));
        // No more than is left.
        let state = decide(&state, ask("a", 70), from_millis(2)).unwrap().iter().fold(state, apply);
        assert_eq!(
            decide(&state, ask("b", 31), from_millis(3)),
            Err(ChargeError::RefundTooLarge { asked: Money::cny(31), left: Money::cny(30), charged: Money::cny(100) })
        );
        assert_eq!(decide(&state, ask("a", 10), from_millis(3)), Err(ChargeError::RefundExists("a".into())));
        // A failed refund's amount is free again; a refund ends once.
        let failed = ChargeCommand::RecordRefundFailure {
            refund_id: "a".into(),
            provider_code: "X".into(),
            message: String::new(),
        };
        let state = decide(&state, failed.clone(), from_millis(4)).unwrap().iter().fold(state, apply);
        assert_eq!(decide(&state, failed, from_millis(5)), Err(ChargeError::RefundNotPending("a".into())));
        assert!(decide(&state, ask("b", 100), from_millis(5)).is_ok());
        let c = state.unwrap();
        assert_eq!(c.refunds_in(RefundStatus::Failed), Money::cny(70));
        assert_eq!(c.refunds_in(RefundStatus::Succeeded), Money::cny(0));
    }

    #[test]
    fn the_same_key_is_the_same_refund() {
        let state = succeeded();
        let c = state.as_ref().unwrap();
        let id = refund_id(c.charge_id, "refund-1");
        assert_eq!(id, refund_id(c.charge_id, "refund-1"));
        assert_ne!(id, refund_id(c.charge_id, "refund-2"));
        assert!(id.len() <= 64, "{id}");
        assert_eq!(refunded_charge(&id), Some(c.charge_id));
        assert_eq!(refunded_charge("rf_nonsense"), None);

        assert!(c.repeated_refund(&id, Money::cny(40)).is_none(), "a new key is a new refund");
        let state = decide(&state, ask(&id, 40), from_millis(2)).unwrap().iter().fold(state, apply);
        let c = state.as_ref().unwrap();
        assert_eq!(c.repeated_refund(&id, Money::cny(40)).unwrap().unwrap().amount, Money::cny(40));
        let e = c.repeated_refund(&id, Money::cny(50)).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "used for a refund of 0.40 CNY of this charge, not 0.50 CNY");
    }

    fn held() -> ChargeState {
        let ChargeCommand::Schedule { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at, .. } =
            schedule()
        else {
            unreachable!()
        };
        let issue = Issue { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at };
        let reason = HoldReason {
            rule: crate::risk::CHARGE_OVER_MEAN.into(),
            detail: "300 > 200% of 100".into(),
            mean: 100,
            threshold_percent: 200,
            history_count: 2,
        };
        let origin = Origin { reason: Reason::Trigger, description: "ride".into() };
        let command = ChargeCommand::Hold { issue, origin, reason, token: "t".into() };
        decide(&None, command, from_millis(10)).unwrap().iter().fold(None, apply)
    }

    fn release(charge_now: bool) -> ChargeCommand {
        ChargeCommand::ReleaseHold { by: Releaser::Payer, note: String::new(), charge_now }
    }

    #[test]
    fn a_held_charge_is_never_attempted_until_released() {
        let state = held();
        let c = state.as_ref().unwrap();
        assert_eq!(c.status, ChargeStatus::Held);
        assert_eq!(c.hold.as_ref().unwrap().expires_at, from_millis(10) + crate::risk::HOLD_EXPIRY);
        let start = ChargeCommand::StartAttempt { provider: "simulator".into() };
        assert_eq!(decide(&state, start.clone(), from_millis(11)), Err(ChargeError::AlreadyEnded(ChargeStatus::Held)));
        assert_eq!(decide(&state, ChargeCommand::IssueReleased, from_millis(11)), Err(ChargeError::NotReleased));

        // Released now: scheduled at the release, with the origin it was held with.
        let events = decide(&state, release(true), from_millis(20)).unwrap();
        assert!(matches!(events[0], ChargeEvent::HoldReleased { by: Releaser::Payer, .. }));
        let ChargeEvent::Scheduled { due_at, origin, .. } = &events[1] else { panic!("{events:?}") };
        assert_eq!((*due_at, origin.description.as_str()), (from_millis(20), "ride"));
        let state = events.iter().fold(state, apply);
        assert_eq!(state.as_ref().unwrap().status, ChargeStatus::Scheduled);
        assert!(decide(&state, start, from_millis(21)).is_ok());
        assert_eq!(decide(&state, release(true), from_millis(21)), Err(ChargeError::NotHeld(ChargeStatus::Scheduled)));
    }

    #[test]
    fn a_release_for_later_schedules_once_and_a_hold_is_released_once() {
        let state = held();
        let state = decide(&state, release(false), from_millis(20)).unwrap().iter().fold(state, apply);
        assert_eq!(state.as_ref().unwrap().status, ChargeStatus::Held);
        assert_eq!(decide(&state, release(false), from_millis(21)), Err(ChargeError::AlreadyReleased));
        let state = decide(&state, ChargeCommand::IssueReleased, from_millis(30)).unwrap().iter().fold(state, apply);
        assert_eq!(state.as_ref().unwrap().due_at, from_millis(30));
        assert_eq!(
            decide(&state, ChargeCommand::IssueReleased, from_millis(31)),
            Err(ChargeError::NotHeld(ChargeStatus::Scheduled))
        );
    }

    #[test]
    fn a_held_charge_is_rejected_with_its_terms() {
        let state = held();
        let reject =
            ChargeCommand::Reject { issue: None, rule: crate::risk::HOLD_EXPIRED.into(), detail: "48 h".into() };
        let events = decide(&state, reject, from_millis(99)).unwrap();
        let ChargeEvent::Rejected { issue, .. } = &events[0] else { panic!() };
        assert_eq!(issue.amount, Money::cny(100));
        let state = events.iter().fold(state, apply);
        let c = state.as_ref().unwrap();
        assert_eq!((c.status, c.code.as_deref()), (ChargeStatus::Rejected, Some(crate::risk::HOLD_EXPIRED)));
        assert_eq!(decide(&state, release(true), from_millis(100)), Err(ChargeError::NotHeld(ChargeStatus::Rejected)));
    }
}
