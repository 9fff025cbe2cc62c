//! Merchant events in the log, and the merchant fields they share with the API.
use super::from_millis;
use crate::repository::Stored;
use autodebit_domain::merchant::{
    Application, Document, DocumentKind, EntityKind, Merchant, MerchantEvent, MerchantType,
};
use autodebit_domain::{MerchantId, Timestamp};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

pub fn document_kind_from_pb(raw: i32) -> Option<DocumentKind> {
    use pb::DocumentKind as P;
    Some(match P::try_from(raw).ok()? {
        P::Unspecified => return None,
        P::BusinessLicence => DocumentKind::BusinessLicence,
        P::LegalRepresentativeId => DocumentKind::LegalRepresentativeId,
        P::CorporateBankAccount => DocumentKind::CorporateBankAccount,
        P::IcpFiling => DocumentKind::IcpFiling,
        P::CategoryWhitelist => DocumentKind::CategoryWhitelist,
        P::HygienePermit => DocumentKind::HygienePermit,
        P::ServiceAreaProof => DocumentKind::ServiceAreaProof,
        P::OnlineCulturePermit => DocumentKind::OnlineCulturePermit,
        P::CopyrightProof => DocumentKind::CopyrightProof,
        P::SchoolLicence => DocumentKind::SchoolLicence,
        P::OnlineEducationFiling => DocumentKind::OnlineEducationFiling,
        P::SpecialIndustryFiling => DocumentKind::SpecialIndustryFiling,
    })
}

pub fn document_kind_to_pb(k: DocumentKind) -> pb::DocumentKind {
    use pb::DocumentKind as P;
    match k {
        DocumentKind::BusinessLicence => P::BusinessLicence,
        DocumentKind::LegalRepresentativeId => P::LegalRepresentativeId,
        DocumentKind::CorporateBankAccount => P::CorporateBankAccount,
        DocumentKind::IcpFiling => P::IcpFiling,
        DocumentKind::CategoryWhitelist => P::CategoryWhitelist,
        DocumentKind::HygienePermit => P::HygienePermit,
        DocumentKind::ServiceAreaProof => P::ServiceAreaProof,
        DocumentKind::OnlineCulturePermit => P::OnlineCulturePermit,
        DocumentKind::CopyrightProof => P::CopyrightProof,
        DocumentKind::SchoolLicence => P::SchoolLicence,
        DocumentKind::OnlineEducationFiling => P::OnlineEducationFiling,
        DocumentKind::SpecialIndustryFiling => P::SpecialIndustryFiling,
    }
}

/// A document from its protobuf form; `None` for an unknown kind.
pub fn document_from_pb(d: &pb::Document) -> Option<Document> {
    let kind = document_kind_from_pb(d.kind)?;
    Some(Document { kind, sha256: d.sha256.clone(), location: d.location.clone() })
}

pub fn document_to_pb(d: &Document) -> pb::Document {
    pb::Document { kind: document_kind_to_pb(d.kind) as i32, sha256: d.sha256.clone(), location: d.location.clone() }
}

pub fn merchant_type_from_pb(raw: i32) -> Option<MerchantType> {
    Some(match pb::MerchantType::try_from(raw).ok()? {
        pb::MerchantType::Unspecified => return None,
        pb::MerchantType::ECommerce => MerchantType::ECommerce,
        pb::MerchantType::LocalServices => MerchantType::LocalServices,
        pb::MerchantType::PaidContent => MerchantType::PaidContent,
        pb::MerchantType::Education => MerchantType::Education,
        pb::MerchantType::Other => MerchantType::Other,
    })
}

pub fn merchant_type_to_pb(t: MerchantType) -> pb::MerchantType {
    match t {
        MerchantType::ECommerce => pb::MerchantType::ECommerce,
        MerchantType::LocalServices => pb::MerchantType::LocalServices,
        MerchantType::PaidContent => pb::MerchantType::PaidContent,
        MerchantType::Education => pb::MerchantType::Education,
        MerchantType::Other => pb::MerchantType::Other,
    }
}

pub fn entity_from_pb(raw: i32) -> Option<EntityKind> {
    match pb::EntityKind::try_from(raw).ok()? {
        pb::EntityKind::Unspecified => None,
        pb::EntityKind::Enterprise => Some(EntityKind::Enterprise),
        pb::EntityKind::Individual => Some(EntityKind::Individual),
    }
}

pub fn entity_to_pb(e: EntityKind) -> pb::EntityKind {
    match e {
        EntityKind::Enterprise => pb::EntityKind::Enterprise,
        EntityKind::Individual => pb::EntityKind::Individual,
    }
}

pub fn merchant_event_to_pb(id: &MerchantId, e: &MerchantEvent) -> pb::Event {
    use pb::MerchantReviewOutcome as O;
    let reviewed = |outcome: O, reason: &str, at: &Timestamp| {
        EventKind::MerchantReviewed(pb::MerchantReviewed {
            merchant_id: id.to_string(),
            outcome: outcome as i32,
            reason: reason.to_string(),
            reviewed_at_ms: at.timestamp_millis(),
        })
    };
    let kind = match e {
        MerchantEvent::Applied { application: a, high_risk, review_due_earliest, review_due_latest, at } => {
            EventKind::MerchantApplied(pb::MerchantApplied {
                merchant_id: id.to_string(),
                legal_name: a.legal_name.clone(),
                credit_code: a.credit_code.clone(),
                entity: entity_to_pb(a.entity) as i32,
                industry: a.industry.clone(),
                merchant_type: merchant_type_to_pb(a.merchant_type) as i32,
                documents: a.documents.iter().map(document_to_pb).collect(),
                contact_email: a.contact_email.clone(),
                high_risk: *high_risk,
                review_due_earliest_ms: review_due_earliest.timestamp_millis(),
                review_due_latest_ms: review_due_latest.timestamp_millis(),
                applied_at_ms: at.timestamp_millis(),
                time_zone: a.time_zone.clone(),
            })
        }
        MerchantEvent::DocumentFiled { document, at } => EventKind::MerchantDocumentFiled(pb::MerchantDocumentFiled {
            merchant_id: id.to_string(),
            document: Some(document_to_pb(document)),
            filed_at_ms: at.timestamp_millis(),
        }),
        MerchantEvent::ReviewStarted { at } => reviewed(O::Started, "", at),
        MerchantEvent::Approved { at } => reviewed(O::Approved, "", at),
        MerchantEvent::Rejected { reason, at } => reviewed(O::Rejected, reason, at),
        MerchantEvent::Suspended { reason, at } => reviewed(O::Suspended, reason, at),
        MerchantEvent::Reinstated { at } => reviewed(O::Reinstated, "", at),
        MerchantEvent::ApiKeyIssued { key_id, secret_sha256, label, at } => EventKind::ApiKeyIssued(pb::ApiKeyIssued {
            merchant_id: id.to_string(),
            key_id: key_id.clone(),
            secret_sha256: secret_sha256.clone(),
            label: label.clone(),
            issued_at_ms: at.timestamp_millis(),
        }),
        MerchantEvent::ApiKeyRevoked { key_id, at } => EventKind::ApiKeyRevoked(pb::ApiKeyRevoked {
            merchant_id: id.to_string(),
            key_id: key_id.clone(),
            revoked_at_ms: at.timestamp_millis(),
        }),
    };
    pb::Event { kind: Some(kind) }
}

pub fn merchant_event_from_pb(kind: &EventKind) -> Option<MerchantEvent> {
    use pb::MerchantReviewOutcome as O;
    Some(match kind {
        EventKind::MerchantApplied(a) => MerchantEvent::Applied {
            application: Application {
                merchant_id: MerchantId::parse(&a.merchant_id).ok()?,
                legal_name: a.legal_name.clone(),
                credit_code: a.credit_code.clone(),
                entity: entity_from_pb(a.entity)?,
                industry: a.industry.clone(),
                merchant_type: merchant_type_from_pb(a.merchant_type)?,
                documents: a.documents.iter().filter_map(document_from_pb).collect(),
                contact_email: a.contact_email.clone(),
                time_zone: a.time_zone.clone(),
            },
            high_risk: a.high_risk,
            review_due_earliest: from_millis(a.review_due_earliest_ms),
            review_due_latest: from_millis(a.review_due_latest_ms),
            at: from_millis(a.applied_at_ms),
        },
        EventKind::MerchantDocumentFiled(d) => MerchantEvent::DocumentFiled {
            document: document_from_pb(d.document.as_ref()?)?,
            at: from_millis(d.filed_at_ms),
        },
        EventKind::MerchantReviewed(r) => {
            let at = from_millis(r.reviewed_at_ms);
            match O::try_from(r.outcome).ok()? {
                O::Unspecified => return None,
                O::Started => MerchantEvent::ReviewStarted { at },
                O::Approved => MerchantEvent::Approved { at },
                O::Rejected => MerchantEvent::Rejected { reason: r.reason.clone(), at },
                O::Suspended => MerchantEvent::Suspended { reason: r.reason.clone(), at },
                O::Reinstated => MerchantEvent::Reinstated { at },
            }
        }
        EventKind::ApiKeyIssued(k) => MerchantEvent::ApiKeyIssued {
            key_id: k.key_id.clone(),
            secret_sha256: k.secret_sha256.clone(),
            label: k.label.clone(),
            at: from_millis(k.issued_at_ms),
        },
        EventKind::ApiKeyRevoked(k) => {
            MerchantEvent::ApiKeyRevoked { key_id: k.key_id.clone(), at: from_millis(k.revoked_at_ms) }
        }
        _ => return None,
    })
}

impl Stored for Merchant {
    fn to_pb(before: &Option<Merchant>, event: &MerchantEvent) -> Option<pb::Event> {
        let id = match (before, event) {
            (Some(m), _) => &m.application.merchant_id,
            (None, MerchantEvent::Applied { application, .. }) => &application.merchant_id,
            // No event but the application comes first.
            (None, _) => return None,
        };
        Some(merchant_event_to_pb(id, event))
    }

    fn from_pb(kind: &EventKind) -> Option<MerchantEvent> {
        merchant_event_from_pb(kind)
    }
}
