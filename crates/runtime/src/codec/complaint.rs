//! Complaint events to and from protobuf.
use super::from_millis;
use crate::repository::Stored;
use autodebit_domain::ChargeId;
use autodebit_domain::complaint::{
    Answer, Complaint, ComplaintEvent, Evidence, Filing, Kind, Penalty, Source, complaint_refund_id,
};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

fn evidence_to_pb(e: &[Evidence]) -> Vec<pb::ComplaintEvidence> {
    e.iter()
        .map(|e| pb::ComplaintEvidence {
            name: e.name.clone(),
            content_type: e.content_type.clone(),
            size_bytes: e.size_bytes,
            sha256: e.sha256.clone(),
        })
        .collect()
}

fn evidence_from_pb(e: &[pb::ComplaintEvidence]) -> Vec<Evidence> {
    e.iter()
        .map(|e| Evidence {
            name: e.name.clone(),
            content_type: e.content_type.clone(),
            size_bytes: e.size_bytes,
            sha256: e.sha256.clone(),
        })
        .collect()
}

impl Stored for Complaint {
    fn to_pb(before: &Option<Complaint>, event: &ComplaintEvent) -> Option<pb::Event> {
        let kind = match event {
            ComplaintEvent::Filed { filing: f, deadline, at } => EventKind::ComplaintFiled(pb::ComplaintFiled {
                complaint_id: f.complaint_id.clone(),
                charge_id: f.charge_id.to_string(),
                contract_id: f.contract_id.clone(),
                merchant_id: f.merchant_id.clone(),
                payer_id: f.payer_id.clone(),
                kind: f.kind.name().to_string(),
                source: f.source.name().to_string(),
                description: f.description.clone(),
                evidence: evidence_to_pb(&f.evidence),
                provider_complaint_id: f.provider_complaint_id.clone(),
                deadline_at_ms: deadline.timestamp_millis(),
                filed_at_ms: at.timestamp_millis(),
                charged: Some(super::money_to_pb(f.charged)),
            }),
            ComplaintEvent::Answered { answer, late, at } => {
                let f = &before.as_ref()?.filing;
                let (refund, note, evidence) = match answer {
                    Answer::Refund { amount } => (*amount, String::new(), Vec::new()),
                    Answer::Reject { reason, evidence } => (0, reason.clone(), evidence_to_pb(evidence)),
                    Answer::Resolve { note } => (0, note.clone(), Vec::new()),
                };
                EventKind::ComplaintAnswered(pb::ComplaintAnswered {
                    complaint_id: f.complaint_id.clone(),
                    charge_id: f.charge_id.to_string(),
                    merchant_id: f.merchant_id.clone(),
                    payer_id: f.payer_id.clone(),
                    answer: answer.name().to_string(),
                    refund_minor_units: refund,
                    refund_id: if refund > 0 { complaint_refund_id(f) } else { String::new() },
                    note,
                    evidence,
                    late: *late,
                    answered_at_ms: at.timestamp_millis(),
                })
            }
            ComplaintEvent::DeadlineMissed { penalty, at } => {
                let f = &before.as_ref()?.filing;
                EventKind::ComplaintDeadlineMissed(pb::ComplaintDeadlineMissed {
                    complaint_id: f.complaint_id.clone(),
                    charge_id: f.charge_id.to_string(),
                    merchant_id: f.merchant_id.clone(),
                    kind: f.kind.name().to_string(),
                    penalty: penalty.name().to_string(),
                    missed_at_ms: at.timestamp_millis(),
                })
            }
        };
        Some(pb::Event { kind: Some(kind) })
    }

    fn from_pb(kind: &EventKind) -> Option<ComplaintEvent> {
        match kind {
            EventKind::ComplaintFiled(f) => Some(ComplaintEvent::Filed {
                filing: Filing {
                    complaint_id: f.complaint_id.clone(),
                    charge_id: ChargeId::parse(&f.charge_id).ok()?,
                    contract_id: f.contract_id.clone(),
                    merchant_id: f.merchant_id.clone(),
                    payer_id: f.payer_id.clone(),
                    charged: super::money_from_pb(f.charged.as_ref()).ok()?,
                    kind: Kind::from_name(&f.kind)?,
                    source: Source::from_name(&f.source)?,
                    description: f.description.clone(),
                    evidence: evidence_from_pb(&f.evidence),
                    provider_complaint_id: f.provider_complaint_id.clone(),
                },
                deadline: from_millis(f.deadline_at_ms),
                at: from_millis(f.filed_at_ms),
            }),
            EventKind::ComplaintAnswered(a) => Some(ComplaintEvent::Answered {
                answer: match a.answer.as_str() {
                    "refund" => Answer::Refund { amount: a.refund_minor_units },
                    "reject" => Answer::Reject { reason: a.note.clone(), evidence: evidence_from_pb(&a.evidence) },
                    _ => Answer::Resolve { note: a.note.clone() },
                },
                late: a.late,
                at: from_millis(a.answered_at_ms),
            }),
            EventKind::ComplaintDeadlineMissed(m) => Some(ComplaintEvent::DeadlineMissed {
                penalty: Penalty::from_name(&m.penalty)?,
                at: from_millis(m.missed_at_ms),
            }),
            _ => None,
        }
    }
}
