//! Complaints about a charge: their kinds, who files them, the merchant's deadline to answer
//! and the penalty when it is missed, the answers, and the evidence a complaint may carry.
//!
//! The rules (`decide`, tested below):
//! - one complaint per charge: its id derives from the charge ([`complaint_id`]), and its
//!   stream is created with "no stream yet";
//! - the deadline runs from the filing, by kind: unauthorized charge 2 hours, amount dispute
//!   12 hours, service not delivered and other 24 hours;
//! - the merchant answers once: a refund (carried out by the charger), a rejection with
//!   evidence, or resolved with a note; an answer after the deadline is still taken, late;
//! - a deadline passes once, only while unanswered, and brings its kind's penalty: charging
//!   frozen (unauthorized charge), settlement delayed (amount dispute), credit score reduced
//!   (service not delivered, other).
use crate::{ChargeId, Timestamp};
use chrono::TimeDelta;

/// What a complaint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    UnauthorizedCharge,
    AmountDispute,
    ServiceNotDelivered,
    Other,
}

/// What happens to the merchant when it misses a complaint's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Penalty {
    /// No charge is issued for the merchant until an operator lifts the freeze.
    FreezeCharging,
    /// Its settlement batches wait [`SETTLEMENT_DELAY_WORKING_DAYS`] more working days.
    DelaySettlement,
    /// Its credit score loses [`crate::credit::MISSED_DEADLINE`] points.
    ReduceCredit,
}

/// How much later a merchant's settlement runs after it missed an amount dispute's deadline.
pub const SETTLEMENT_DELAY_WORKING_DAYS: u32 = 1;

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::UnauthorizedCharge, Kind::AmountDispute, Kind::ServiceNotDelivered, Kind::Other];

    pub fn name(self) -> &'static str {
        match self {
            Kind::UnauthorizedCharge => "unauthorized_charge",
            Kind::AmountDispute => "amount_dispute",
            Kind::ServiceNotDelivered => "service_not_delivered",
            Kind::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How long the merchant has to answer.
    pub fn deadline(self) -> TimeDelta {
        match self {
            Kind::UnauthorizedCharge => TimeDelta::hours(2),
            Kind::AmountDispute => TimeDelta::hours(12),
            Kind::ServiceNotDelivered | Kind::Other => TimeDelta::hours(24),
        }
    }

    pub fn penalty(self) -> Penalty {
        match self {
            Kind::UnauthorizedCharge => Penalty::FreezeCharging,
            Kind::AmountDispute => Penalty::DelaySettlement,
            Kind::ServiceNotDelivered | Kind::Other => Penalty::ReduceCredit,
        }
    }
}

impl Penalty {
    pub fn name(self) -> &'static str {
        match self {
            Penalty::FreezeCharging => "charging_frozen",
            Penalty::DelaySettlement => "settlement_delayed",
            Penalty::ReduceCredit => "credit_reduced",
        }
    }

    pub fn from_name(name: &str) -> Option<Penalty> {
        [Penalty::FreezeCharging, Penalty::DelaySettlement, Penalty::ReduceCredit]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// Who filed a complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// On their own page.
    Payer,
    Operator,
    /// From WeChat Pay's merchant complaints (the payer complained there).
    WechatPay,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Payer => "payer",
            Source::Operator => "operator",
            Source::WechatPay => "wechatpay",
        }
    }

    pub fn from_name(name: &str) -> Option<Source> {
        [Source::Payer, Source::Operator, Source::WechatPay].into_iter().find(|s| s.name() == name)
    }
}

/// The most pieces of evidence one filing or answer carries.
pub const MAX_EVIDENCE: usize = 5;
/// The largest piece of evidence, in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 2 * 1024 * 1024;
/// The kinds of evidence taken: images and PDF documents.
pub const EVIDENCE_TYPES: [&str; 3] = ["image/jpeg", "image/png", "application/pdf"];
/// The longest description or note, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// A piece of evidence as the log records it: its bytes are kept by the service, found by
/// their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub name: String,
    pub content_type: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// Why a piece of evidence is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("at most {MAX_EVIDENCE} pieces of evidence")]
    TooMany,
    #[error("{name}: {size} bytes is more than {MAX_EVIDENCE_BYTES}")]
    TooLarge { name: String, size: usize },
    #[error("{name}: {content_type:?} is not taken (image/jpeg, image/png, application/pdf)")]
    Type { name: String, content_type: String },
    #[error("{name}: the bytes are not a {content_type} file")]
    Mismatch { name: String, content_type: String },
    #[error("{0:?}: a piece of evidence needs a name of 1 to 100 characters")]
    Name(String),
}

/// Checks one piece of evidence: a name, an allowed type that its first bytes bear out, and a
/// size within the bound.
pub fn check_evidence(name: &str, content_type: &str, bytes: &[u8]) -> Result<(), EvidenceError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(EvidenceError::Name(name.to_string()));
    }
    if !EVIDENCE_TYPES.contains(&content_type) {
        return Err(EvidenceError::Type { name: name.to_string(), content_type: content_type.to_string() });
    }
    if bytes.len() > MAX_EVIDENCE_BYTES {
        return Err(EvidenceError::TooLarge { name: name.to_string(), size: bytes.len() });
    }
    let magic: &[u8] = match content_type {
        "image/jpeg" => &[0xFF, 0xD8, 0xFF],
        "image/png" => b"\x89PNG\r\n\x1a\n",
        _ => b"%PDF-",
    };
    if !bytes.starts_with(magic) {
        return Err(EvidenceError::Mismatch { name: name.to_string(), content_type: content_type.to_string() });
    }
    Ok(())
}

/// The merchant's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Paid back: `amount` of the charge, refunded through the charger.
    Refund { amount: i64 },
    /// Refused, with what shows the charge was right.
    Reject { reason: String, evidence: Vec<Evidence> },
    /// Settled otherwise (service restored, explained), with a note.
    Resolve { note: String },
}

impl Answer {
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Refund { .. } => "refund",
            Answer::Reject { .. } => "reject",
            Answer::Resolve { .. } => "resolve",
        }
    }
}

/// What a filing says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    pub complaint_id: String,
    pub charge_id: ChargeId,
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    /// What the charge took.
    pub charged: crate::Money,
    pub kind: Kind,
    pub source: Source,
    pub description: String,
    pub evidence: Vec<Evidence>,
    /// The provider's own id for it (WeChat Pay's complaint_id), "" for others.
    pub provider_complaint_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComplaintEvent {
    Filed { filing: Filing, deadline: Timestamp, at: Timestamp },
    Answered { answer: Answer, late: bool, at: Timestamp },
    DeadlineMissed { penalty: Penalty, at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComplaintCommand {
    File(Box<Filing>),
    Answer(Answer),
    /// The deadline's sweep: the deadline passed unanswered.
    MissDeadline,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComplaintError {
    #[error("charge_id: the charge has a complaint already ({0})")]
    AlreadyFiled(String),
    #[error("complaint_id: no such complaint")]
    NotFiled,
    #[error("the complaint was answered already ({0})")]
    AlreadyAnswered(&'static str),
    #[error("the deadline has not passed")]
    NotDue,
    #[error("the deadline was missed already")]
    AlreadyMissed,
}

/// A complaint as its events left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    pub filing: Filing,
    pub filed_at: Timestamp,
    pub deadline: Timestamp,
    pub answer: Option<Answer>,
    pub answered_at: Option<Timestamp>,
    pub late: bool,
    /// The penalty applied when the deadline passed unanswered.
    pub missed: Option<Penalty>,
}

pub type ComplaintState = Option<Complaint>;

/// The complaint id of a charge: one per charge.
pub fn complaint_id(charge: ChargeId) -> String {
    let hex = charge.to_string();
    format!("cp_{}", hex.trim_start_matches("ch_"))
}

/// The refund a complaint's refund answer asks for: one per complaint, however often the
/// answer is carried out.
pub fn complaint_refund_id(f: &Filing) -> String {
    crate::charge::refund_id(f.charge_id, &format!("complaint:{}", f.complaint_id))
}

pub fn stream(complaint_id: &str) -> String {
    format!("complaint-{complaint_id}")
}

impl crate::Aggregate for Complaint {
    type State = ComplaintState;
    type Command = ComplaintCommand;
    type Event = ComplaintEvent;
    type Error = ComplaintError;

    fn decide(
        state: &ComplaintState,
        command: ComplaintCommand,
        now: Timestamp,
    ) -> Result<Vec<ComplaintEvent>, ComplaintError> {
        match (state, command) {
            (None, ComplaintCommand::File(filing)) => {
                let deadline = now + filing.kind.deadline();
                Ok(vec![ComplaintEvent::Filed { filing: *filing, deadline, at: now }])
            }
            (Some(c), ComplaintCommand::File(_)) => Err(ComplaintError::AlreadyFiled(c.filing.complaint_id.clone())),
            (None, _) => Err(ComplaintError::NotFiled),
            (Some(c), ComplaintCommand::Answer(answer)) => match &c.answer {
                Some(a) => Err(ComplaintError::AlreadyAnswered(a.name())),
                None => Ok(vec![ComplaintEvent::Answered { answer, late: now >= c.deadline, at: now }]),
            },
            (Some(c), ComplaintCommand::MissDeadline) => {
                if let Some(a) = &c.answer {
                    return Err(ComplaintError::AlreadyAnswered(a.name()));
                }
                if c.missed.is_some() {
                    return Err(ComplaintError::AlreadyMissed);
                }
                if now < c.deadline {
                    return Err(ComplaintError::NotDue);
                }
                Ok(vec![ComplaintEvent::DeadlineMissed { penalty: c.filing.kind.penalty(), at: now }])
            }
        }
    }

    fn apply(state: ComplaintState, event: &ComplaintEvent) -> ComplaintState {
        match (state, event) {
            (None, ComplaintEvent::Filed { filing, deadline, at }) => Some(Complaint {
                filing: filing.clone(),
                filed_at: *at,
                deadline: *deadline,
                answer: None,
                answered_at: None,
                late: false,
                missed: None,
            }),
            (Some(mut c), ComplaintEvent::Answered { answer, late, at }) => {
                c.answer = Some(answer.clone());
                c.answered_at = Some(*at);
                c.late = *late;
                Some(c)
            }
            (Some(mut c), ComplaintEvent::DeadlineMissed { penalty, .. }) => {
                c.missed = Some(*penalty);
                Some(c)
            }
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Aggregate;
    use crate::clock::from_millis;

    fn filing(kind: Kind) -> Filing {
        let charge = ChargeId::for_period(crate::ContractId::generate(), 1);
        Filing {
            complaint_id: complaint_id(charge),
            charge_id: charge,
            contract_id: "ct".into(),
            merchant_id: "m".into(),
            payer_id: "p".into(),
            charged: crate::Money::cny(100),
            kind,
            source: Source::Payer,
            description: "I did not agree to this".into(),
            evidence: vec![],
            provider_complaint_id: String::new(),
        }
    }

    fn run(state: ComplaintState, command: ComplaintCommand, at_ms: i64) -> Result<ComplaintState, ComplaintError> {
        let events = Complaint::decide(&state, command, from_millis(at_ms))?;
        Ok(events.iter().fold(state, Complaint::apply))
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn each_kind_has_its_deadline_and_penalty() {
        let table: Vec<(Kind, i64, Penalty)> =
            Kind::ALL.into_iter().map(|k| (k, k.deadline().num_hours(), k.penalty())).collect();
        assert_eq!(
            table,
            [
                (Kind::UnauthorizedCharge, 2, Penalty::FreezeCharging),
                (Kind::AmountDispute, 12, Penalty::DelaySettlement),
                (Kind::ServiceNotDelivered, 24, Penalty::ReduceCredit),
                (Kind::Other, 24, Penalty::ReduceCredit),
            ]
        );
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(Penalty::from_name(k.penalty().name()), Some(k.penalty()));
        }
    }

    #[test]
    fn a_charge_has_one_complaint_answered_once() {
        let filed = run(None, ComplaintCommand::File(Box::new(filing(Kind::AmountDispute))), 0).unwrap();
        let c = filed.as_ref().unwrap();
        assert_eq!(c.deadline, from_millis(12 * HOUR));
        let again = run(filed.clone(), ComplaintCommand::File(Box::new(filing(Kind::Other))), 1);
        assert!(matches!(again, Err(ComplaintError::AlreadyFiled(_))));
        let answered = run(filed, ComplaintCommand::Answer(Answer::Resolve { note: "restored".into() }), HOUR).unwrap();
        assert!(!answered.as_ref().unwrap().late);
        let twice = run(answered.clone(), ComplaintCommand::Answer(Answer::Refund { amount: 1 }), 2 * HOUR);
        assert_eq!(twice, Err(ComplaintError::AlreadyAnswered("resolve")));
        // Answered in time: the deadline passes without a penalty.
        assert_eq!(
            run(answered, ComplaintCommand::MissDeadline, 13 * HOUR),
            Err(ComplaintError::AlreadyAnswered("resolve"))
        );
        assert_eq!(run(None, ComplaintCommand::MissDeadline, 0), Err(ComplaintError::NotFiled));
    }

    #[test]
    fn a_missed_deadline_brings_its_penalty_once_and_a_late_answer_is_late() {
        let filed = run(None, ComplaintCommand::File(Box::new(filing(Kind::UnauthorizedCharge))), 0).unwrap();
        assert_eq!(run(filed.clone(), ComplaintCommand::MissDeadline, 2 * HOUR - 1), Err(ComplaintError::NotDue));
        let missed = run(filed, ComplaintCommand::MissDeadline, 2 * HOUR).unwrap();
        assert_eq!(missed.as_ref().unwrap().missed, Some(Penalty::FreezeCharging));
        assert_eq!(run(missed.clone(), ComplaintCommand::MissDeadline, 3 * HOUR), Err(ComplaintError::AlreadyMissed));
        let late = run(missed, ComplaintCommand::Answer(Answer::Refund { amount: 100 }), 3 * HOUR).unwrap();
        assert!(late.unwrap().late);
    }

    #[test]
    fn evidence_is_an_image_or_pdf_within_the_size_its_bytes_bear_out() {
        assert!(check_evidence("receipt.png", "image/png", b"\x89PNG\r\n\x1a\nrest").is_ok());
        assert!(check_evidence("log.pdf", "application/pdf", b"%PDF-1.7").is_ok());
        assert!(check_evidence("a.jpg", "image/jpeg", &[0xFF, 0xD8, 0xFF, 0xE0]).is_ok());
        assert!(matches!(check_evidence("x.exe", "application/x-msdownload", b"MZ"), Err(EvidenceError::Type { .. })));
        assert!(matches!(check_evidence("fake.png", "image/png", b"GIF89a"), Err(EvidenceError::Mismatch { .. })));
        let big = [b"%PDF-".as_slice(), &vec![0u8; MAX_EVIDENCE_BYTES]].concat();
        assert!(matches!(check_evidence("big.pdf", "application/pdf", &big), Err(EvidenceError::TooLarge { .. })));
        assert!(matches!(check_evidence("", "application/pdf", b"%PDF-"), Err(EvidenceError::Name(_))));
    }
}
