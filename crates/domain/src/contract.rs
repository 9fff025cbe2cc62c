//! The contract aggregate: a payer's signed agreement with a merchant, from signing to its
//! end. Terminated and expired are final.
use crate::{ContractId, Cycle, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId, Timestamp};

/// Who ended a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationMode {
    Payer,
    Merchant,
    CustomerService,
    Provider,
    /// The platform's own clean-up (a zombie contract after its notice).
    Platform,
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
        plan_id: String,
        expires_at: Option<Timestamp>,
        signed_at: Timestamp,
        /// The payer's mobile number (E.164) from the signing session; "" when none was given
        /// or the contract was signed another way.
        payer_phone: String,
        /// The language the payer signed in ("zh-CN" or "en"); "" when signed another way.
        language: String,
    },
    /// A change of terms; the payer is told (the event carries the notice text).
    Modified {
        amount_per_cycle: Money,
        cycle: Cycle,
        effective_at: Timestamp,
        notice: String,
        at: Timestamp,
    },
    Suspended {
        reason: String,
        at: Timestamp,
    },
    Resumed {
        at: Timestamp,
    },
    Terminated {
        contract_id: ContractId,
        mode: TerminationMode,
        remark: String,
        terminated_at: Timestamp,
    },
    Expired {
        at: Timestamp,
    },
    /// No successful charge for a long time: the payer is told, and the contract ends later
    /// unless it is used.
    ZombieFlagged {
        idle_since: Timestamp,
        at: Timestamp,
    },
    /// The contract's validity ends within the warning period (`validity::EXPIRY_WARNING_DAYS`):
    /// the payer is told, once.
    ExpiryWarned {
        expires_at: Timestamp,
        at: Timestamp,
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
        plan_id: String,
        expires_at: Option<Timestamp>,
        /// The payer's mobile number ("": none).
        payer_phone: String,
        /// The language the payer signed in ("": none).
        language: String,
    },
    Modify {
        amount_per_cycle: Money,
        cycle: Cycle,
        /// The most one charge may be under the contract's plan.
        cap: Money,
        effective_at: Timestamp,
        notice: String,
    },
    Suspend {
        reason: String,
    },
    Resume,
    Terminate {
        mode: TerminationMode,
        remark: String,
    },
    Expire,
    FlagZombie {
        idle_since: Timestamp,
    },
    /// Warns the payer that the validity ends soon; only when `validity::due_for_warning`.
    WarnExpiry,
}

/// Failed charges in a row after which an active contract is suspended.
pub const SUSPEND_AFTER_FAILURES: u32 = 3;

/// Whether a run of `failures` failed charges in a row suspends a contract now in `status`
/// (only an active one is suspended; a success ends the run).
pub fn failures_suspend(failures: u32, status: ContractStatus) -> bool {
    failures >= SUSPEND_AFTER_FAILURES && status == ContractStatus::Active
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractStatus {
    Active,
    Suspended,
    Terminated,
    Expired,
}

impl ContractStatus {
    pub fn is_final(&self) -> bool {
        matches!(self, ContractStatus::Terminated | ContractStatus::Expired)
    }
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
    pub plan_id: String,
    pub signed_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub status: ContractStatus,
    pub suspension_reason: String,
    /// When it was last flagged as unused.
    pub zombie_flagged_at: Option<Timestamp>,
    pub termination: Option<(TerminationMode, String, Timestamp)>,
    pub ended_at: Option<Timestamp>,
    /// The cycle it was signed with (at its signing time), then each new cycle with the time
    /// the change took effect: `modification::calendar` rebuilds its due dates from it.
    pub cycle_history: Vec<(Timestamp, Cycle)>,
    /// The payer's mobile number ("": none known).
    pub payer_phone: String,
    /// The language the payer signed in ("zh-CN" or "en"; "": none known).
    pub language: String,
    /// When the payer was warned that the validity ends soon.
    pub expiry_warned_at: Option<Timestamp>,
}

/// `None` until signed.
pub type ContractState = Option<Contract>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("the contract is already signed")]
    AlreadySigned,
    #[error("the contract does not exist")]
    NotSigned,
    #[error("the contract is {0:?}, which is final")]
    Ended(ContractStatus),
    #[error("{amount} is above the per-charge cap of {cap}")]
    AboveCap { amount: Money, cap: Money },
    #[error("must be positive")]
    NotPositive,
    #[error("the contract is {0:?}; {1}")]
    WrongStatus(ContractStatus, &'static str),
    #[error("the contract is valid until {0}; it cannot expire before")]
    NotYetExpired(Timestamp),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("the contract is not due an expiry warning: its validity does not end within the warning period")]
    NotDueForWarning,
    #[error("the payer was warned of the contract's expiry at {0}")]
    AlreadyWarned(Timestamp),
}

fn check_amount(amount: Money, cap: Money) -> Result<(), ContractError> {
    if amount.minor_units() <= 0 {
        return Err(ContractError::NotPositive);
    }
    let cap_units = cap.minor_units().min(MAX_CHARGE_CNY_FEN);
    if amount.minor_units() > cap_units || amount.currency() != cap.currency() {
        return Err(ContractError::AboveCap { amount, cap: Money::new(cap_units, cap.currency()) });
    }
    Ok(())
}

/// Decides what a command does to a contract; pure.
pub fn decide(
    state: &ContractState,
    command: ContractCommand,
    now: Timestamp,
) -> Result<Vec<ContractEvent>, ContractError> {
    use ContractStatus::*;
    let Some(c) = state else {
        return match command {
            ContractCommand::Sign {
                contract_id,
                merchant_id,
                payer_id,
                amount_per_cycle,
                cycle,
                merchant_contract_code,
                plan_id,
                expires_at,
                payer_phone,
                language,
            } => {
                // The platform's hard cap is stated in CNY; other currencies are held to the
                // same number of minor units.
                check_amount(amount_per_cycle, Money::new(MAX_CHARGE_CNY_FEN, amount_per_cycle.currency()))?;
                Ok(vec![ContractEvent::Signed {
                    contract_id,
                    merchant_id,
                    payer_id,
                    amount_per_cycle,
                    cycle,
                    merchant_contract_code,
                    plan_id,
                    expires_at,
                    signed_at: now,
                    payer_phone,
                    language,
                }])
            }
            _ => Err(ContractError::NotSigned),
        };
    };
    if let ContractCommand::Sign { .. } = command {
        return Err(ContractError::AlreadySigned);
    }
    if c.status.is_final() {
        return Err(ContractError::Ended(c.status));
    }
    match command {
        ContractCommand::Sign { .. } => Err(ContractError::AlreadySigned),
        ContractCommand::Modify { amount_per_cycle, cycle, cap, effective_at, notice } => {
            check_amount(amount_per_cycle, cap)?;
            if notice.trim().is_empty() {
                return Err(ContractError::Empty("notice"));
            }
            Ok(vec![ContractEvent::Modified {
                amount_per_cycle,
                cycle,
                effective_at: effective_at.max(now),
                notice,
                at: now,
            }])
        }
        ContractCommand::Suspend { reason } => match c.status {
            Active if reason.trim().is_empty() => Err(ContractError::Empty("reason")),
            Active => Ok(vec![ContractEvent::Suspended { reason, at: now }]),
            s => Err(ContractError::WrongStatus(s, "only an active contract can be suspended")),
        },
        ContractCommand::Resume => match c.status {
            Suspended => Ok(vec![ContractEvent::Resumed { at: now }]),
            s => Err(ContractError::WrongStatus(s, "only a suspended contract can be resumed")),
        },
        ContractCommand::Terminate { mode, remark } => {
            Ok(vec![ContractEvent::Terminated { contract_id: c.contract_id, mode, remark, terminated_at: now }])
        }
        ContractCommand::Expire => match c.expires_at {
            Some(t) if crate::validity::has_expired(t, now) => Ok(vec![ContractEvent::Expired { at: now }]),
            Some(t) => Err(ContractError::NotYetExpired(t)),
            None => Err(ContractError::WrongStatus(c.status, "the contract has no end of validity")),
        },
        // The caller (the clean-up job) flags only contracts idle since their last flag or
        // success, so a contract used again after a flag can be flagged again when idle anew.
        ContractCommand::FlagZombie { idle_since } => Ok(vec![ContractEvent::ZombieFlagged { idle_since, at: now }]),
        ContractCommand::WarnExpiry => match (c.expiry_warned_at, c.expires_at) {
            (Some(at), _) => Err(ContractError::AlreadyWarned(at)),
            (None, Some(expires_at)) if crate::validity::due_for_warning(c.status, c.expires_at, false, now) => {
                Ok(vec![ContractEvent::ExpiryWarned { expires_at, at: now }])
            }
            (None, _) => Err(ContractError::NotDueForWarning),
        },
    }
}

/// Folds one event into the state; events are facts, so this never fails. An event that
/// cannot follow the state (which `decide` never produces) leaves the state as it was.
pub fn apply(state: ContractState, event: &ContractEvent) -> ContractState {
    use ContractStatus::*;
    if let ContractEvent::Signed {
        contract_id,
        merchant_id,
        payer_id,
        amount_per_cycle,
        cycle,
        merchant_contract_code,
        plan_id,
        expires_at,
        signed_at,
        payer_phone,
        language,
    } = event
    {
        return Some(state.unwrap_or(Contract {
            contract_id: *contract_id,
            merchant_id: merchant_id.clone(),
            payer_id: payer_id.clone(),
            amount_per_cycle: *amount_per_cycle,
            cycle: *cycle,
            merchant_contract_code: merchant_contract_code.clone(),
            plan_id: plan_id.clone(),
            signed_at: *signed_at,
            expires_at: *expires_at,
            status: Active,
            suspension_reason: String::new(),
            zombie_flagged_at: None,
            termination: None,
            ended_at: None,
            cycle_history: vec![(*signed_at, *cycle)],
            payer_phone: payer_phone.clone(),
            language: language.clone(),
            expiry_warned_at: None,
        }));
    }
    let mut c = state?;
    if c.status.is_final() {
        return Some(c);
    }
    match event {
        ContractEvent::Signed { .. } => {}
        ContractEvent::Modified { amount_per_cycle, cycle, effective_at, .. } => {
            if *cycle != c.cycle {
                c.cycle_history.push((*effective_at, *cycle));
            }
            c.amount_per_cycle = *amount_per_cycle;
            c.cycle = *cycle;
        }
        ContractEvent::Suspended { reason, .. } => {
            c.status = Suspended;
            c.suspension_reason = reason.clone();
        }
        ContractEvent::Resumed { .. } => {
            c.status = Active;
            c.suspension_reason.clear();
        }
        ContractEvent::Terminated { mode, remark, terminated_at, .. } => {
            c.status = Terminated;
            c.termination = Some((*mode, remark.clone(), *terminated_at));
            c.ended_at = Some(*terminated_at);
        }
        ContractEvent::Expired { at } => {
            c.status = Expired;
            c.ended_at = Some(*at);
        }
        ContractEvent::ZombieFlagged { at, .. } => c.zombie_flagged_at = Some(*at),
        ContractEvent::ExpiryWarned { at, .. } => c.expiry_warned_at = Some(*at),
    }
    Some(c)
}

/// The contract aggregate, stream `contract-<id>`.
impl crate::Aggregate for Contract {
    type State = ContractState;
    type Command = ContractCommand;
    type Event = ContractEvent;
    type Error = ContractError;

    fn decide(
        state: &ContractState,
        command: ContractCommand,
        now: Timestamp,
    ) -> Result<Vec<ContractEvent>, ContractError> {
        decide(state, command, now)
    }

    fn apply(state: ContractState, event: &ContractEvent) -> ContractState {
        apply(state, event)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_third_failed_charge_in_a_row_suspends_an_active_contract() {
        assert!(!failures_suspend(2, ContractStatus::Active));
        assert!(failures_suspend(3, ContractStatus::Active));
        assert!(failures_suspend(4, ContractStatus::Active), "a run past three still suspends");
        for other in [ContractStatus::Suspended, ContractStatus::Terminated, ContractStatus::Expired] {
            assert!(!failures_suspend(3, other), "{other:?}");
        }
    }

    use super::*;
    use crate::clock::from_millis;
    use proptest::prelude::*;

    fn sign(amount: i64) -> ContractCommand {
        ContractCommand::Sign {
            contract_id: ContractId::generate(),
            merchant_id: MerchantId::parse("m1").unwrap(),
            payer_id: PayerId::parse("p1").unwrap(),
            amount_per_cycle: Money::cny(amount),
            cycle: Cycle::Monthly,
            merchant_contract_code: "code-1".into(),
            plan_id: "pl_1".into(),
            expires_at: Some(from_millis(10_000)),
            payer_phone: String::new(),
            language: String::new(),
        }
    }

    fn terminate() -> ContractCommand {
        ContractCommand::Terminate { mode: TerminationMode::Payer, remark: "moving".into() }
    }

    fn run(state: ContractState, cmd: ContractCommand) -> Result<ContractState, ContractError> {
        run_at(state, cmd, 1_000)
    }

    fn run_at(state: ContractState, cmd: ContractCommand, ms: i64) -> Result<ContractState, ContractError> {
        let events = decide(&state, cmd, from_millis(ms))?;
        Ok(events.iter().fold(state, apply))
    }

    #[test]
    fn sign_suspend_resume_terminate() {
        let s = run(None, sign(1_500)).unwrap();
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Active);
        let s = run(s, ContractCommand::Suspend { reason: "3 failed charges".into() }).unwrap();
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Suspended);
        assert!(run(s.clone(), ContractCommand::Suspend { reason: "again".into() }).is_err());
        let s = run(s, ContractCommand::Resume).unwrap();
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Active);
        let s = run(s, terminate()).unwrap();
        let c = s.clone().unwrap();
        assert_eq!(c.status, ContractStatus::Terminated);
        assert_eq!(c.termination.unwrap().0, TerminationMode::Payer);
        assert_eq!(run(s.clone(), terminate()), Err(ContractError::Ended(ContractStatus::Terminated)));
        assert_eq!(run(s, sign(1)), Err(ContractError::AlreadySigned));
    }

    #[test]
    fn expiry_waits_for_the_end_of_validity() {
        let s = run(None, sign(100)).unwrap();
        assert_eq!(
            run_at(s.clone(), ContractCommand::Expire, 9_999),
            Err(ContractError::NotYetExpired(from_millis(10_000)))
        );
        let s = run_at(s, ContractCommand::Expire, 10_000).unwrap();
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Expired);
        assert_eq!(run(s, ContractCommand::Resume), Err(ContractError::Ended(ContractStatus::Expired)));
    }

    #[test]
    fn modification_respects_the_cap_and_needs_a_notice() {
        let s = run(None, sign(100)).unwrap();
        let modify = |amount, notice: &str| ContractCommand::Modify {
            amount_per_cycle: Money::cny(amount),
            cycle: Cycle::Quarterly,
            cap: Money::cny(500),
            effective_at: from_millis(0),
            notice: notice.into(),
        };
        assert!(matches!(run(s.clone(), modify(501, "n")), Err(ContractError::AboveCap { .. })));
        assert_eq!(run(s.clone(), modify(400, " ")), Err(ContractError::Empty("notice")));
        let s = run(s, modify(400, "您的扣款金额将调整为 4.00 元")).unwrap().unwrap();
        assert_eq!((s.amount_per_cycle, s.cycle), (Money::cny(400), Cycle::Quarterly));
    }

    #[test]
    fn cap_and_positivity() {
        assert!(run(None, sign(MAX_CHARGE_CNY_FEN)).is_ok());
        assert!(matches!(run(None, sign(MAX_CHARGE_CNY_FEN + 1)), Err(ContractError::AboveCap { .. })));
        assert_eq!(run(None, sign(0)), Err(ContractError::NotPositive));
        assert_eq!(run(None, terminate()), Err(ContractError::NotSigned));
    }

    #[test]
    fn the_payer_is_warned_of_the_expiry_once_within_the_last_seven_days() {
        const DAY_MS: i64 = 86_400_000;
        let end = 30 * DAY_MS;
        let sign_until = |end_ms: i64| {
            let mut s = sign(100);
            if let ContractCommand::Sign { expires_at, .. } = &mut s {
                *expires_at = Some(from_millis(end_ms));
            }
            s
        };
        let s = run_at(None, sign_until(end), 0).unwrap();
        assert_eq!(s.as_ref().unwrap().expiry_warned_at, None);
        assert_eq!(
            run_at(s.clone(), ContractCommand::WarnExpiry, end - 7 * DAY_MS - 1),
            Err(ContractError::NotDueForWarning),
            "a moment before the warning period"
        );
        let warned_at = end - 7 * DAY_MS;
        let events = decide(&s, ContractCommand::WarnExpiry, from_millis(warned_at)).unwrap();
        assert_eq!(
            events,
            vec![ContractEvent::ExpiryWarned { expires_at: from_millis(end), at: from_millis(warned_at) }]
        );
        let s = events.iter().fold(s, apply);
        assert_eq!(s.as_ref().unwrap().expiry_warned_at, Some(from_millis(warned_at)));
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Active, "a warning changes nothing else");
        assert_eq!(
            run_at(s.clone(), ContractCommand::WarnExpiry, end - DAY_MS),
            Err(ContractError::AlreadyWarned(from_millis(warned_at)))
        );
        // Still expires at the end of its validity.
        let s = run_at(s, ContractCommand::Expire, end).unwrap();
        assert_eq!(s.as_ref().unwrap().status, ContractStatus::Expired);
        assert_eq!(run_at(s, ContractCommand::WarnExpiry, end + 1), Err(ContractError::Ended(ContractStatus::Expired)));

        // Past its end a contract is expired, not warned; without an end it is never warned.
        let late = run_at(None, sign_until(end), 0).unwrap();
        assert_eq!(run_at(late, ContractCommand::WarnExpiry, end), Err(ContractError::NotDueForWarning));
        let mut open = sign(100);
        if let ContractCommand::Sign { expires_at, .. } = &mut open {
            *expires_at = None;
        }
        let open = run_at(None, open, 0).unwrap();
        assert_eq!(run_at(open, ContractCommand::WarnExpiry, end), Err(ContractError::NotDueForWarning));
        // A suspended contract still in force is warned too.
        let s = run_at(None, sign_until(end), 0).unwrap();
        let s = run_at(s, ContractCommand::Suspend { reason: "r".into() }, 1).unwrap();
        assert!(run_at(s, ContractCommand::WarnExpiry, end - DAY_MS).is_ok());
    }

    #[test]
    fn a_signing_keeps_the_payers_phone_and_language() {
        let mut cmd = sign(100);
        if let ContractCommand::Sign { payer_phone, language, .. } = &mut cmd {
            *payer_phone = "+8613800138000".into();
            *language = "en".into();
        }
        let c = run(None, cmd).unwrap().unwrap();
        assert_eq!((c.payer_phone.as_str(), c.language.as_str()), ("+8613800138000", "en"));
    }

    fn command(i: u8) -> ContractCommand {
        match i % 8 {
            0 => sign(100),
            1 => ContractCommand::Suspend { reason: "r".into() },
            2 => ContractCommand::Resume,
            3 => terminate(),
            4 => ContractCommand::Expire,
            5 => ContractCommand::FlagZombie { idle_since: from_millis(0) },
            6 => ContractCommand::WarnExpiry,
            _ => ContractCommand::Modify {
                amount_per_cycle: Money::cny(200),
                cycle: Cycle::Weekly,
                cap: Money::cny(300),
                effective_at: from_millis(0),
                notice: "n".into(),
            },
        }
    }

    proptest! {
        /// Over any command sequence: nothing happens to a contract after it ends, every event
        /// decide produces applies to the state it was decided on, the status only moves along
        /// the legal transitions, and the payer is warned of the expiry at most once, inside
        /// the warning period.
        #[test]
        fn state_machine(cmds in proptest::collection::vec((0u8..8, 0i64..20_000), 0..25)) {
            let mut state: ContractState = None;
            let mut warnings = 0;
            for (c, t) in cmds {
                let before = state.clone();
                match decide(&state, command(c), from_millis(t)) {
                    Ok(events) => {
                        if let Some(b) = &before {
                            prop_assert!(!b.status.is_final(), "an ended contract took {events:?}");
                        }
                        for e in &events {
                            if let ContractEvent::ExpiryWarned { at, .. } = e {
                                warnings += 1;
                                let b = before.as_ref().unwrap();
                                prop_assert!(crate::validity::due_for_warning(b.status, b.expires_at, false, *at));
                            }
                        }
                        prop_assert!(warnings <= 1, "warned {warnings} times");
                        state = events.iter().fold(state, apply);
                        let (from, to) = (before.as_ref().map(|c| c.status), state.as_ref().map(|c| c.status));
                        use ContractStatus::*;
                        let legal = matches!(
                            (from, to),
                            (None, Some(Active))
                                | (Some(Active), Some(Active | Suspended | Terminated | Expired))
                                | (Some(Suspended), Some(Suspended | Active | Terminated | Expired))
                        );
                        prop_assert!(legal, "{from:?} -> {to:?}");
                    }
                    Err(_) => prop_assert_eq!(&state, &before),
                }
            }
        }
    }
}
