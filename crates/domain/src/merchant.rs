//! The merchant aggregate: an enterprise's application, its review, and its API keys.
use crate::{Aggregate, MerchantId, Timestamp};
use chrono::{Datelike, Days, Weekday};

/// The review of an application is due within this many working days (earliest, latest).
pub const REVIEW_WORKING_DAYS: (u32, u32) = (3, 5);
/// The same for an industry the policy lists as sensitive.
pub const SENSITIVE_REVIEW_WORKING_DAYS: (u32, u32) = (7, 15);
/// A legal name is at most this many characters.
pub const MAX_LEGAL_NAME_CHARS: usize = 128;
/// A document's location is at most this many bytes.
pub const MAX_DOCUMENT_LOCATION_LEN: usize = 512;
/// An API key's label is at most this many characters.
pub const MAX_KEY_LABEL_CHARS: usize = 64;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x51d3_0c7e_2a4b_4f19_9e88_03b7_c6a1_d250);

/// A merchant's id derives from its unified social credit code: one company, one merchant.
pub fn merchant_id_for(credit_code: &str) -> MerchantId {
    let id = format!("mch_{}", uuid::Uuid::new_v5(&NAMESPACE, credit_code.as_bytes()).simple());
    // "mch_" and 32 hex digits always parse.
    MerchantId::parse(&id).expect("derived merchant ids are valid")
}

/// The stream a merchant's events are kept in.
pub fn stream(id: &MerchantId) -> String {
    format!("merchant-{id}")
}

/// Who applies. Only enterprises may offer recurring deduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Enterprise,
    Individual,
}

/// What the merchant sells; each type has documents of its own to file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MerchantType {
    ECommerce,
    LocalServices,
    PaidContent,
    Education,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocumentKind {
    BusinessLicence,
    LegalRepresentativeId,
    CorporateBankAccount,
    IcpFiling,
    CategoryWhitelist,
    HygienePermit,
    ServiceAreaProof,
    OnlineCulturePermit,
    CopyrightProof,
    SchoolLicence,
    OnlineEducationFiling,
    /// The filing a high-risk industry (finance, medical) needs before approval.
    SpecialIndustryFiling,
}

/// A filed document, recorded as metadata: the file itself lives wherever `location` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: DocumentKind,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    pub location: String,
}

/// Documents every application needs.
pub const BASE_DOCUMENTS: &[DocumentKind] =
    &[DocumentKind::BusinessLicence, DocumentKind::LegalRepresentativeId, DocumentKind::CorporateBankAccount];

impl MerchantType {
    /// The documents this type must file besides the base ones. Each inner slice is one
    /// requirement met by any of its kinds (education: a school licence or an online-education
    /// filing).
    pub fn required_documents(&self) -> &'static [&'static [DocumentKind]] {
        use DocumentKind::*;
        match self {
            MerchantType::ECommerce => &[&[IcpFiling], &[CategoryWhitelist]],
            MerchantType::LocalServices => &[&[HygienePermit], &[ServiceAreaProof]],
            MerchantType::PaidContent => &[&[OnlineCulturePermit], &[CopyrightProof]],
            MerchantType::Education => &[&[SchoolLicence, OnlineEducationFiling]],
            MerchantType::Other => &[],
        }
    }
}

/// Which industries may apply and which of them count as high-risk or sensitive. Operators
/// configure it; the default follows the platform's admission rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndustryPolicy {
    pub admitted: Vec<String>,
    /// Need a special filing before approval.
    pub high_risk: Vec<String>,
    /// Reviewed in 7–15 working days instead of 3–5.
    pub sensitive: Vec<String>,
}

impl IndustryPolicy {
    /// The working days within which an application from `industry` is reviewed (earliest,
    /// latest).
    pub fn review_working_days(&self, industry: &str) -> (u32, u32) {
        if self.sensitive.iter().any(|s| s == industry) { SENSITIVE_REVIEW_WORKING_DAYS } else { REVIEW_WORKING_DAYS }
    }

    pub fn is_high_risk(&self, industry: &str) -> bool {
        self.high_risk.iter().any(|s| s == industry)
    }
}

impl Default for IndustryPolicy {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IndustryPolicy {
            admitted: v(&[
                "ecommerce",
                "local_services",
                "paid_content",
                "education",
                "membership",
                "mobility",
                "utilities",
                "telecom",
                "insurance",
                "finance",
                "medical",
                "charity",
            ]),
            high_risk: v(&["finance", "medical"]),
            sensitive: v(&["finance", "medical", "education", "insurance"]),
        }
    }
}

/// An application as filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub merchant_id: MerchantId,
    pub legal_name: String,
    /// The 18-character unified social credit code on the business licence.
    pub credit_code: String,
    pub entity: EntityKind,
    pub industry: String,
    pub merchant_type: MerchantType,
    pub documents: Vec<Document>,
    pub contact_email: String,
    /// The IANA zone whose calendar the merchant bills in (days, months, daily limits).
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantStatus {
    Applied,
    UnderReview,
    Approved,
    Rejected,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub application: Application,
    pub status: MerchantStatus,
    pub applied_at: Timestamp,
    pub review_due_earliest: Timestamp,
    pub review_due_latest: Timestamp,
    pub high_risk: bool,
    pub reason: String,
    pub api_keys: Vec<ApiKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: String,
    pub secret_sha256: String,
    pub label: String,
    pub issued_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantEvent {
    Applied {
        application: Application,
        high_risk: bool,
        review_due_earliest: Timestamp,
        review_due_latest: Timestamp,
        at: Timestamp,
    },
    DocumentFiled {
        document: Document,
        at: Timestamp,
    },
    ReviewStarted {
        at: Timestamp,
    },
    Approved {
        at: Timestamp,
    },
    Rejected {
        reason: String,
        at: Timestamp,
    },
    Suspended {
        reason: String,
        at: Timestamp,
    },
    Reinstated {
        at: Timestamp,
    },
    ApiKeyIssued {
        key_id: String,
        secret_sha256: String,
        label: String,
        at: Timestamp,
    },
    ApiKeyRevoked {
        key_id: String,
        at: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantCommand {
    /// An application, checked against the policy in force when it is filed.
    Apply {
        application: Application,
        policy: IndustryPolicy,
    },
    FileDocument(Document),
    StartReview,
    Approve,
    Reject {
        reason: String,
    },
    Suspend {
        reason: String,
    },
    Reinstate,
    IssueApiKey {
        key_id: String,
        secret_sha256: String,
        label: String,
    },
    RevokeApiKey {
        key_id: String,
    },
}

/// Why a command was refused; `field` names the request field at fault, where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerchantError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("the merchant has already applied")]
    AlreadyApplied,
    #[error("no such merchant")]
    NotFound,
    #[error("the merchant is {0:?}; {1}")]
    WrongStatus(MerchantStatus, &'static str),
    #[error("a high-risk industry needs a special industry filing before approval")]
    SpecialFilingMissing,
    #[error("api key {0} does not exist or is already revoked")]
    UnknownKey(String),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> MerchantError {
    MerchantError::Invalid { field, problem: problem.into() }
}

/// Adds `n` working days (Monday to Friday; public holidays are not modelled) to `from`.
pub fn add_working_days(from: Timestamp, n: u32) -> Timestamp {
    let tz = crate::cycle::beijing();
    let mut day = from.with_timezone(&tz);
    let mut left = n;
    while left > 0 {
        day = day.checked_add_days(Days::new(1)).unwrap_or(day);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    day.with_timezone(&chrono::Utc)
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_document(d: &Document) -> Result<(), MerchantError> {
    if !is_hex_sha256(&d.sha256) {
        return Err(invalid("documents.sha256", "must be 64 lower-case hex digits (SHA-256 of the file)"));
    }
    if d.location.is_empty() || d.location.len() > MAX_DOCUMENT_LOCATION_LEN {
        return Err(invalid(
            "documents.location",
            format!("must be a URI of at most {MAX_DOCUMENT_LOCATION_LEN} characters"),
        ));
    }
    Ok(())
}

/// Checks an application against the admission rules; the error names the field.
pub fn check_application(a: &Application, policy: &IndustryPolicy) -> Result<(), MerchantError> {
    if a.entity != EntityKind::Enterprise {
        return Err(invalid(
            "entity",
            "only enterprises may offer recurring deduction; individual applicants are refused",
        ));
    }
    let name_len = a.legal_name.chars().count();
    if name_len == 0 || name_len > MAX_LEGAL_NAME_CHARS {
        return Err(invalid("legal_name", format!("must be 1 to {MAX_LEGAL_NAME_CHARS} characters")));
    }
    if a.credit_code.len() != 18 || !a.credit_code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
        return Err(invalid(
            "credit_code",
            "must be the 18-character unified social credit code (digits and upper-case letters)",
        ));
    }
    if !policy.admitted.contains(&a.industry) {
        return Err(invalid(
            "industry",
            format!("{:?} is not on the admission list ({})", a.industry, policy.admitted.join(", ")),
        ));
    }
    if !a.contact_email.contains('@') || a.contact_email.len() > 254 {
        return Err(invalid("contact_email", "must be an e-mail address"));
    }
    if let Err(problem) = crate::cycle::zone(&a.time_zone) {
        return Err(invalid("time_zone", problem));
    }
    for d in &a.documents {
        check_document(d)?;
    }
    let has = |k: DocumentKind| a.documents.iter().any(|d| d.kind == k);
    for k in BASE_DOCUMENTS {
        if !has(*k) {
            return Err(invalid("documents", format!("{k:?} is required")));
        }
    }
    for any_of in a.merchant_type.required_documents() {
        if !any_of.iter().any(|k| has(*k)) {
            let names: Vec<String> = any_of.iter().map(|k| format!("{k:?}")).collect();
            return Err(invalid(
                "documents",
                format!("{} is required for {:?} merchants", names.join(" or "), a.merchant_type),
            ));
        }
    }
    Ok(())
}

/// The merchant's state: `None` until it applies.
pub type MerchantState = Option<Merchant>;

impl Aggregate for Merchant {
    type State = MerchantState;
    type Command = MerchantCommand;
    type Event = MerchantEvent;
    type Error = MerchantError;

    fn decide(
        state: &MerchantState,
        command: MerchantCommand,
        now: Timestamp,
    ) -> Result<Vec<MerchantEvent>, MerchantError> {
        decide(state.as_ref(), command, now)
    }

    fn apply(state: MerchantState, event: &MerchantEvent) -> MerchantState {
        apply(state, event)
    }
}

pub fn decide(
    state: Option<&Merchant>,
    command: MerchantCommand,
    now: Timestamp,
) -> Result<Vec<MerchantEvent>, MerchantError> {
    use MerchantStatus::*;
    let Some(m) = state else {
        return match command {
            MerchantCommand::Apply { application, policy } => {
                check_application(&application, &policy)?;
                let (lo, hi) = policy.review_working_days(&application.industry);
                Ok(vec![MerchantEvent::Applied {
                    high_risk: policy.is_high_risk(&application.industry),
                    review_due_earliest: add_working_days(now, lo),
                    review_due_latest: add_working_days(now, hi),
                    application,
                    at: now,
                }])
            }
            _ => Err(MerchantError::NotFound),
        };
    };
    match command {
        MerchantCommand::Apply { .. } => Err(MerchantError::AlreadyApplied),
        MerchantCommand::FileDocument(d) => {
            check_document(&d)?;
            if !matches!(m.status, Applied | UnderReview) {
                return Err(MerchantError::WrongStatus(m.status, "documents are filed before the review ends"));
            }
            Ok(vec![MerchantEvent::DocumentFiled { document: d, at: now }])
        }
        MerchantCommand::StartReview => match m.status {
            Applied => Ok(vec![MerchantEvent::ReviewStarted { at: now }]),
            s => Err(MerchantError::WrongStatus(s, "only a new application can go under review")),
        },
        MerchantCommand::Approve => {
            if m.status != UnderReview {
                return Err(MerchantError::WrongStatus(m.status, "only an application under review can be approved"));
            }
            if m.high_risk && !m.application.documents.iter().any(|d| d.kind == DocumentKind::SpecialIndustryFiling) {
                return Err(MerchantError::SpecialFilingMissing);
            }
            Ok(vec![MerchantEvent::Approved { at: now }])
        }
        MerchantCommand::Reject { reason } => {
            if reason.trim().is_empty() {
                return Err(invalid("reason", "a rejection needs a reason"));
            }
            match m.status {
                Applied | UnderReview => Ok(vec![MerchantEvent::Rejected { reason, at: now }]),
                s => Err(MerchantError::WrongStatus(s, "only a pending application can be rejected")),
            }
        }
        MerchantCommand::Suspend { reason } => {
            if reason.trim().is_empty() {
                return Err(invalid("reason", "a suspension needs a reason"));
            }
            match m.status {
                Approved => Ok(vec![MerchantEvent::Suspended { reason, at: now }]),
                s => Err(MerchantError::WrongStatus(s, "only an approved merchant can be suspended")),
            }
        }
        MerchantCommand::Reinstate => match m.status {
            Suspended => Ok(vec![MerchantEvent::Reinstated { at: now }]),
            s => Err(MerchantError::WrongStatus(s, "only a suspended merchant can be reinstated")),
        },
        MerchantCommand::IssueApiKey { key_id, secret_sha256, label } => {
            if m.status != Approved {
                return Err(MerchantError::WrongStatus(m.status, "only an approved merchant gets API keys"));
            }
            if label.chars().count() > MAX_KEY_LABEL_CHARS {
                return Err(invalid("label", format!("must be at most {MAX_KEY_LABEL_CHARS} characters")));
            }
            Ok(vec![MerchantEvent::ApiKeyIssued { key_id, secret_sha256, label, at: now }])
        }
        MerchantCommand::RevokeApiKey { key_id } => {
            if !m.api_keys.iter().any(|k| k.key_id == key_id && k.revoked_at.is_none()) {
                return Err(MerchantError::UnknownKey(key_id));
            }
            Ok(vec![MerchantEvent::ApiKeyRevoked { key_id, at: now }])
        }
    }
}

pub fn apply(state: Option<Merchant>, event: &MerchantEvent) -> Option<Merchant> {
    use MerchantStatus::*;
    if let MerchantEvent::Applied { application, high_risk, review_due_earliest, review_due_latest, at } = event {
        return Some(state.unwrap_or(Merchant {
            application: application.clone(),
            status: Applied,
            applied_at: *at,
            review_due_earliest: *review_due_earliest,
            review_due_latest: *review_due_latest,
            high_risk: *high_risk,
            reason: String::new(),
            api_keys: Vec::new(),
        }));
    }
    let mut m = state?;
    match event {
        MerchantEvent::Applied { .. } => {}
        MerchantEvent::DocumentFiled { document, .. } => {
            m.application.documents.retain(|d| d.kind != document.kind);
            m.application.documents.push(document.clone());
        }
        MerchantEvent::ReviewStarted { .. } => m.status = UnderReview,
        MerchantEvent::Approved { .. } | MerchantEvent::Reinstated { .. } => {
            m.status = Approved;
            m.reason.clear();
        }
        MerchantEvent::Rejected { reason, .. } => {
            m.status = Rejected;
            m.reason = reason.clone();
        }
        MerchantEvent::Suspended { reason, .. } => {
            m.status = Suspended;
            m.reason = reason.clone();
        }
        MerchantEvent::ApiKeyIssued { key_id, secret_sha256, label, at } => m.api_keys.push(ApiKey {
            key_id: key_id.clone(),
            secret_sha256: secret_sha256.clone(),
            label: label.clone(),
            issued_at: *at,
            revoked_at: None,
        }),
        MerchantEvent::ApiKeyRevoked { key_id, at } => {
            for k in m.api_keys.iter_mut().filter(|k| &k.key_id == key_id) {
                k.revoked_at = Some(*at);
            }
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use chrono::TimeZone;

    fn doc(kind: DocumentKind) -> Document {
        Document { kind, sha256: "a".repeat(64), location: "s3://docs/x".into() }
    }

    fn application(industry: &str, t: MerchantType, extra: &[DocumentKind]) -> Application {
        let mut documents: Vec<Document> = BASE_DOCUMENTS.iter().map(|k| doc(*k)).collect();
        documents.extend(extra.iter().map(|k| doc(*k)));
        Application {
            merchant_id: MerchantId::parse("mch_1").unwrap(),
            legal_name: "杭州示例科技有限公司".into(),
            credit_code: "91330100MA2XXXXX1X".into(),
            entity: EntityKind::Enterprise,
            industry: industry.into(),
            merchant_type: t,
            documents,
            contact_email: "ops@example.cn".into(),
            time_zone: "Asia/Shanghai".into(),
        }
    }

    fn apply_cmd(application: Application) -> MerchantCommand {
        MerchantCommand::Apply { application, policy: IndustryPolicy::default() }
    }

    fn run(state: Option<Merchant>, cmd: MerchantCommand) -> Result<Option<Merchant>, MerchantError> {
        let events = Merchant::decide(&state, cmd, from_millis(1_700_000_000_000))?;
        Ok(events.iter().fold(state, Merchant::apply))
    }

    #[test]
    fn admission_rules_name_the_field() {
        let p = IndustryPolicy::default();
        let mut a = application(
            "ecommerce",
            MerchantType::ECommerce,
            &[DocumentKind::IcpFiling, DocumentKind::CategoryWhitelist],
        );
        assert_eq!(check_application(&a, &p), Ok(()));
        a.entity = EntityKind::Individual;
        assert!(matches!(check_application(&a, &p), Err(MerchantError::Invalid { field: "entity", .. })));
        let mut b = application("gambling", MerchantType::Other, &[]);
        assert!(matches!(check_application(&b, &p), Err(MerchantError::Invalid { field: "industry", .. })));
        b.industry = "ecommerce".into();
        b.merchant_type = MerchantType::ECommerce;
        assert!(matches!(check_application(&b, &p), Err(MerchantError::Invalid { field: "documents", .. })));
        let edu = application("education", MerchantType::Education, &[DocumentKind::OnlineEducationFiling]);
        assert_eq!(check_application(&edu, &p), Ok(()), "either education document will do");
        let mut bad = edu.clone();
        bad.documents[0].sha256 = "xyz".into();
        assert!(matches!(check_application(&bad, &p), Err(MerchantError::Invalid { field: "documents.sha256", .. })));
    }

    #[test]
    fn review_workflow_and_special_filing() {
        let m = run(None, apply_cmd(application("finance", MerchantType::Other, &[]))).unwrap();
        let m2 = run(m.clone(), MerchantCommand::StartReview).unwrap();
        assert_eq!(run(m2.clone(), MerchantCommand::Approve), Err(MerchantError::SpecialFilingMissing));
        let filed = run(m2, MerchantCommand::FileDocument(doc(DocumentKind::SpecialIndustryFiling))).unwrap();
        let approved = run(filed, MerchantCommand::Approve).unwrap();
        assert_eq!(approved.as_ref().unwrap().status, MerchantStatus::Approved);
        assert!(run(approved.clone(), apply_cmd(application("finance", MerchantType::Other, &[]))).is_err());
        let suspended = run(approved, MerchantCommand::Suspend { reason: "refund rate 7%".into() }).unwrap();
        assert_eq!(suspended.as_ref().unwrap().status, MerchantStatus::Suspended);
        assert!(
            run(
                suspended.clone(),
                MerchantCommand::IssueApiKey { key_id: "k".into(), secret_sha256: "h".into(), label: "".into() }
            )
            .is_err()
        );
        assert!(run(m.clone(), MerchantCommand::Approve).is_err(), "approval needs a review first");
        assert!(matches!(
            run(m, MerchantCommand::Reject { reason: " ".into() }),
            Err(MerchantError::Invalid { field: "reason", .. })
        ));
    }

    #[test]
    fn keys_are_issued_and_revoked_once() {
        let m = run(None, apply_cmd(application("membership", MerchantType::Other, &[]))).unwrap();
        let m = run(m, MerchantCommand::StartReview).unwrap();
        let m = run(m, MerchantCommand::Approve).unwrap();
        let m = run(
            m,
            MerchantCommand::IssueApiKey { key_id: "k1".into(), secret_sha256: "h".into(), label: "prod".into() },
        )
        .unwrap();
        let m = run(m, MerchantCommand::RevokeApiKey { key_id: "k1".into() }).unwrap();
        assert!(m.as_ref().unwrap().api_keys[0].revoked_at.is_some());
        assert_eq!(
            run(m, MerchantCommand::RevokeApiKey { key_id: "k1".into() }),
            Err(MerchantError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn review_is_due_within_the_working_days_of_the_industry() {
        let p = IndustryPolicy::default();
        assert_eq!(p.review_working_days("membership"), REVIEW_WORKING_DAYS);
        assert_eq!(p.review_working_days("education"), SENSITIVE_REVIEW_WORKING_DAYS);
        // Friday 10:00 in Beijing: 3–5 working days is Wednesday to Friday of the next week.
        let tz = crate::cycle::beijing();
        let friday = tz.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap().with_timezone(&chrono::Utc);
        let events =
            Merchant::decide(&None, apply_cmd(application("membership", MerchantType::Other, &[])), friday).unwrap();
        let MerchantEvent::Applied { review_due_earliest, review_due_latest, high_risk, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert!(!high_risk);
        assert_eq!(review_due_earliest.with_timezone(&tz).day(), 2);
        assert_eq!(review_due_latest.with_timezone(&tz).day(), 4);
    }

    #[test]
    fn the_merchant_id_derives_from_the_credit_code() {
        let a = merchant_id_for("91330100MA2XXXXX1X");
        assert_eq!(a, merchant_id_for("91330100MA2XXXXX1X"));
        assert_ne!(a, merchant_id_for("91330100MA2XXXXX2X"));
        assert!(a.as_str().starts_with("mch_"));
    }

    #[test]
    fn working_days_skip_weekends() {
        let tz = crate::cycle::beijing();
        let friday = tz.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap().with_timezone(&chrono::Utc);
        let due = add_working_days(friday, 3).with_timezone(&tz);
        assert_eq!((due.month(), due.day()), (12, 2), "Fri + 3 working days = Wed");
        let due = add_working_days(friday, 15).with_timezone(&tz);
        assert_eq!((due.month(), due.day()), (12, 18));
    }
}
