//! The signing session aggregate: a payer's way from the authorization page to a signed
//! contract, with the double confirmation (tick the agreement, then confirm with a credential)
//! and the sign-time risk checks. Every step is an event, so analytics can build the funnel.
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    H5,
    MiniProgram,
    App,
}

/// Every step a session can take; each is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PageViewed,
    AgreementTicked,
    HeldForReview,
    ReviewApproved,
    ReviewRejected,
    SmsRequired,
    SmsVerified,
    Confirmed,
    Abandoned,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    /// Waiting for an operator's review (sign-time risk).
    Held,
    Confirmed,
    Abandoned,
    Expired,
    Rejected,
}

impl SessionStatus {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SessionStatus::Confirmed | SessionStatus::Abandoned | SessionStatus::Expired | SessionStatus::Rejected
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub expires_at: Timestamp,
    pub status: SessionStatus,
    pub ticked: bool,
    pub sms_required: bool,
    pub sms_verified: bool,
    pub steps: Vec<(Step, String, Timestamp)>,
}

impl Session {
    pub fn new(expires_at: Timestamp) -> Self {
        Session {
            expires_at,
            status: SessionStatus::Open,
            ticked: false,
            sms_required: false,
            sms_verified: false,
            steps: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("the session has ended ({0:?})")]
    Ended(SessionStatus),
    #[error("the session expired")]
    Expired,
    #[error("tick the agreement first")]
    NotTicked,
    #[error("the session is waiting for a manual review")]
    Held,
    #[error("the session is not waiting for a review")]
    NotHeld,
    #[error("an SMS verification is needed first")]
    SmsNeeded,
    #[error("no SMS verification was asked for")]
    NoSms,
}

/// A step the payer or an operator takes; `decide` says which steps it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningCommand {
    View,
    Tick,
    /// The credential was checked by the caller; `reason` carries the resulting contract id.
    Confirm {
        contract_id: String,
    },
    /// The payer signed at the provider (which authenticated them): confirmed without the
    /// hosted page's tick and SMS, unless the session is held for review.
    ConfirmAtProvider {
        contract_id: String,
    },
    Abandon,
    Expire,
    Hold {
        reason: String,
    },
    RequireSms {
        reason: String,
    },
    VerifySms,
    Approve,
    Reject {
        reason: String,
    },
}

/// The steps `command` records, or why it cannot happen now. A session past its expiry
/// takes no step but `Expired`.
pub fn decide(s: &Session, command: SigningCommand, now: Timestamp) -> Result<Vec<(Step, String)>, SigningError> {
    use SessionStatus::*;
    if s.status.is_final() {
        return Err(SigningError::Ended(s.status));
    }
    if now >= s.expires_at
        && !matches!(command, SigningCommand::Expire | SigningCommand::Approve | SigningCommand::Reject { .. })
    {
        return Err(SigningError::Expired);
    }
    Ok(match command {
        SigningCommand::View => vec![(Step::PageViewed, String::new())],
        SigningCommand::Tick if s.status == Held => return Err(SigningError::Held),
        SigningCommand::Tick => vec![(Step::AgreementTicked, String::new())],
        SigningCommand::Confirm { contract_id } => {
            if s.status == Held {
                return Err(SigningError::Held);
            }
            if !s.ticked {
                return Err(SigningError::NotTicked);
            }
            if s.sms_required && !s.sms_verified {
                return Err(SigningError::SmsNeeded);
            }
            vec![(Step::Confirmed, contract_id)]
        }
        SigningCommand::ConfirmAtProvider { .. } if s.status == Held => return Err(SigningError::Held),
        SigningCommand::ConfirmAtProvider { contract_id } => vec![(Step::Confirmed, contract_id)],
        SigningCommand::Abandon => vec![(Step::Abandoned, String::new())],
        SigningCommand::Expire if now >= s.expires_at => vec![(Step::Expired, String::new())],
        SigningCommand::Expire => vec![],
        SigningCommand::Hold { reason } => vec![(Step::HeldForReview, reason)],
        SigningCommand::RequireSms { reason } => vec![(Step::SmsRequired, reason)],
        SigningCommand::VerifySms if !s.sms_required => return Err(SigningError::NoSms),
        SigningCommand::VerifySms => vec![(Step::SmsVerified, String::new())],
        SigningCommand::Approve if s.status != Held => return Err(SigningError::NotHeld),
        SigningCommand::Approve => vec![(Step::ReviewApproved, String::new())],
        SigningCommand::Reject { .. } if s.status != Held => return Err(SigningError::NotHeld),
        SigningCommand::Reject { reason } => vec![(Step::ReviewRejected, reason)],
    })
}

pub fn apply(mut s: Session, step: Step, detail: &str, at: Timestamp) -> Session {
    use SessionStatus::*;
    if s.status.is_final() {
        return s;
    }
    match step {
        Step::PageViewed => {}
        Step::AgreementTicked => s.ticked = true,
        Step::HeldForReview => s.status = Held,
        Step::ReviewApproved => s.status = Open,
        Step::ReviewRejected => s.status = Rejected,
        Step::SmsRequired => s.sms_required = true,
        Step::SmsVerified => s.sms_verified = true,
        Step::Confirmed => s.status = Confirmed,
        Step::Abandoned => s.status = Abandoned,
        Step::Expired => s.status = Expired,
    }
    s.steps.push((step, detail.to_string(), at));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    fn run(s: Session, c: SigningCommand, ms: i64) -> Result<Session, SigningError> {
        let steps = decide(&s, c, from_millis(ms))?;
        Ok(steps.iter().fold(s, |s, (step, d)| apply(s, *step, d, from_millis(ms))))
    }

    #[test]
    fn double_confirmation() {
        let s = Session::new(from_millis(600_000));
        let s = run(s, SigningCommand::View, 1).unwrap();
        assert_eq!(
            run(s.clone(), SigningCommand::Confirm { contract_id: "c".into() }, 2),
            Err(SigningError::NotTicked)
        );
        let s = run(s, SigningCommand::Tick, 3).unwrap();
        let s = run(s, SigningCommand::Confirm { contract_id: "c".into() }, 4).unwrap();
        assert_eq!(s.status, SessionStatus::Confirmed);
        assert_eq!(run(s, SigningCommand::Tick, 5), Err(SigningError::Ended(SessionStatus::Confirmed)));
    }

    #[test]
    fn risk_holds_and_sms() {
        let s = run(Session::new(from_millis(600_000)), SigningCommand::Hold { reason: "device".into() }, 1).unwrap();
        assert_eq!(run(s.clone(), SigningCommand::Tick, 2), Err(SigningError::Held));
        let s = run(s, SigningCommand::Approve, 3).unwrap();
        let s = run(s, SigningCommand::RequireSms { reason: "region".into() }, 4).unwrap();
        let s = run(s, SigningCommand::Tick, 5).unwrap();
        assert_eq!(
            run(s.clone(), SigningCommand::Confirm { contract_id: "c".into() }, 6),
            Err(SigningError::SmsNeeded)
        );
        let s = run(s, SigningCommand::VerifySms, 7).unwrap();
        assert!(run(s, SigningCommand::Confirm { contract_id: "c".into() }, 8).is_ok());
        let held = run(Session::new(from_millis(600_000)), SigningCommand::Hold { reason: "d".into() }, 1).unwrap();
        assert_eq!(
            run(held, SigningCommand::Reject { reason: "fraud".into() }, 2).unwrap().status,
            SessionStatus::Rejected
        );
    }

    #[test]
    fn sessions_expire() {
        let s = Session::new(from_millis(600_000));
        assert_eq!(run(s.clone(), SigningCommand::Tick, 600_000), Err(SigningError::Expired));
        assert_eq!(run(s.clone(), SigningCommand::Expire, 599_999).unwrap().status, SessionStatus::Open);
        assert_eq!(run(s, SigningCommand::Expire, 600_000).unwrap().status, SessionStatus::Expired);
    }
}
