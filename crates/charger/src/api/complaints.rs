//! `ComplaintsService`: complaints, their answers and SLA figures, merchants' credit.
use crate::complaints::{self, Complaints, CreditView, Error, Row, Upload};
use autodebit_domain::complaint::{Answer, Kind, MAX_TEXT_CHARS, Source};
use autodebit_domain::{ChargeId, MerchantId};
use autodebit_proto::charger::v1::{self as pb, complaints_service_server::ComplaintsService};
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid, page_after, page_size, store_error};
use tonic::{Request, Response, Status};

pub struct ComplaintsApi {
    complaints: Complaints,
}

impl ComplaintsApi {
    pub fn new(complaints: Complaints) -> Self {
        ComplaintsApi { complaints }
    }
}

pub(crate) fn status_of(e: Error) -> Status {
    match e {
        Error::NotFound(m) => Status::not_found(m),
        Error::Invalid { field, problem } => invalid(field, problem),
        Error::Precondition(m) => Status::failed_precondition(m),
        Error::Exists(m) => Status::already_exists(m),
        Error::Store(e) => store_error(e),
        Error::Internal(e) => internal(format!("{e:#}")),
    }
}

fn text(field: &'static str, v: &str) -> Result<String, Status> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(field, format!("must be 1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok(v.to_string())
}

fn uploads(e: &[pb::EvidenceUpload]) -> Vec<Upload> {
    e.iter()
        .map(|u| Upload { name: u.name.clone(), content_type: u.content_type.clone(), data: u.data.to_vec() })
        .collect()
}

fn complaint_to_pb(r: Row, evidence: Vec<autodebit_proto::events::v1::ComplaintEvidence>) -> pb::Complaint {
    pb::Complaint {
        complaint_id: r.complaint_id,
        charge_id: r.charge_id,
        contract_id: r.contract_id,
        merchant_id: r.merchant_id,
        payer_id: r.payer_id,
        kind: r.kind,
        source: r.source,
        description: r.description,
        evidence,
        filed_at_ms: r.filed_at_ms,
        deadline_at_ms: r.deadline_at_ms,
        state: r.state,
        answer: r.answer,
        late: r.late != 0,
        answered_at_ms: r.answered_at_ms,
        penalty: r.missed,
        provider_complaint_id: r.provider_complaint_id,
    }
}

fn credit_to_pb(c: CreditView) -> pb::CreditScore {
    pb::CreditScore {
        merchant_id: c.merchant_id,
        score: c.score,
        standing: complaints::standing_name(c.standing).to_string(),
        charging_frozen_by_complaint: c.frozen_by_complaint,
    }
}

/// The merchant a call is about: a merchant's own (naming another finds nothing), or the one
/// an operator names.
fn merchant_of(who: &Principal, asked: &str) -> Result<String, Status> {
    match who {
        Principal::Merchant(m) if asked.is_empty() || asked == m.as_str() => Ok(m.to_string()),
        Principal::Merchant(_) => Err(Status::not_found(format!("merchant_id: no merchant {asked}"))),
        Principal::Operator => {
            MerchantId::parse(asked).map_err(|e| invalid("merchant_id", e))?;
            Ok(asked.to_string())
        }
    }
}

impl ComplaintsApi {
    async fn shown(&self, r: Row) -> Result<pb::Complaint, Status> {
        let evidence = self.complaints.evidence_of(&r.complaint_id).await.map_err(status_of)?;
        Ok(complaint_to_pb(r, evidence))
    }
}

#[tonic::async_trait]
impl ComplaintsService for ComplaintsApi {
    async fn file_complaint(
        &self,
        req: Request<pb::FileComplaintRequest>,
    ) -> Result<Response<pb::FileComplaintResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let charge_id = ChargeId::parse(&r.charge_id).map_err(|e| invalid("charge_id", e))?;
        let kind = Kind::from_name(&r.kind).ok_or_else(|| {
            invalid("kind", "must be unauthorized_charge, amount_dispute, service_not_delivered or other")
        })?;
        let description = text("description", &r.description)?;
        let row = self
            .complaints
            .file(&who, charge_id, kind, Source::Operator, &description, &uploads(&r.evidence))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::FileComplaintResponse { complaint: Some(self.shown(row).await?) }))
    }

    async fn answer_complaint(
        &self,
        req: Request<pb::AnswerComplaintRequest>,
    ) -> Result<Response<pb::AnswerComplaintResponse>, Status> {
        use pb::answer_complaint_request::Answer as A;
        let who = caller(&req)?;
        let r = req.get_ref();
        let answer = match &r.answer {
            Some(A::Refund(m)) => {
                let money = codec::money_from_pb(Some(m)).map_err(|e| invalid("refund", e))?;
                if money.minor_units() <= 0 {
                    return Err(invalid("refund.minor_units", "must be positive"));
                }
                Answer::Refund { amount: money.minor_units() }
            }
            Some(A::RejectReason(reason)) => {
                Answer::Reject { reason: text("reject_reason", reason)?, evidence: Vec::new() }
            }
            Some(A::ResolveNote(note)) => Answer::Resolve { note: text("resolve_note", note)? },
            None => return Err(invalid("answer", "one of refund, reject_reason, resolve_note is required")),
        };
        let row = self
            .complaints
            .answer(&who, r.complaint_id.trim(), answer, &uploads(&r.evidence))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AnswerComplaintResponse { complaint: Some(self.shown(row).await?) }))
    }

    async fn get_complaint(
        &self,
        req: Request<pb::GetComplaintRequest>,
    ) -> Result<Response<pb::GetComplaintResponse>, Status> {
        let who = caller(&req)?;
        let row = self.complaints.get(&who, req.get_ref().complaint_id.trim()).await.map_err(status_of)?;
        Ok(Response::new(pb::GetComplaintResponse { complaint: Some(self.shown(row).await?) }))
    }

    async fn list_complaints(
        &self,
        req: Request<pb::ListComplaintsRequest>,
    ) -> Result<Response<pb::ListComplaintsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        if !matches!(r.state.as_str(), "" | "open" | "answered") {
            return Err(invalid("state", "must be open or answered"));
        }
        if !r.merchant_id.is_empty() {
            MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        }
        let limit = page_size(r.page_size, 500)?;
        let before = page_after(&r.page_token, |id| id.starts_with("cp_"))?;
        let filter = complaints::Filter {
            merchant_id: (!r.merchant_id.is_empty()).then(|| r.merchant_id.clone()),
            state: (!r.state.is_empty()).then(|| r.state.clone()),
            before,
            limit,
        };
        let (rows, next) = self.complaints.list(&who, filter).await.map_err(status_of)?;
        let mut shown = Vec::with_capacity(rows.len());
        for row in rows {
            shown.push(self.shown(row).await?);
        }
        Ok(Response::new(pb::ListComplaintsResponse { complaints: shown, next_page_token: next.unwrap_or_default() }))
    }

    async fn get_complaint_stats(
        &self,
        req: Request<pb::GetComplaintStatsRequest>,
    ) -> Result<Response<pb::GetComplaintStatsResponse>, Status> {
        let who = caller(&req)?;
        let merchant = merchant_of(&who, &req.get_ref().merchant_id)?;
        let s = self.complaints.stats(&merchant).await.map_err(status_of)?;
        let on_time = if s.filed == 0 { 10_000 } else { (s.in_time * 10_000 / s.filed) as u32 };
        Ok(Response::new(pb::GetComplaintStatsResponse {
            merchant_id: merchant,
            filed: s.filed,
            open: s.open,
            answered_in_time: s.in_time,
            answered_late: s.late,
            deadlines_missed: s.missed,
            median_answer_ms: s.median_answer_ms,
            on_time_basis_points: on_time,
        }))
    }

    async fn get_credit_score(
        &self,
        req: Request<pb::GetCreditScoreRequest>,
    ) -> Result<Response<pb::GetCreditScoreResponse>, Status> {
        let who = caller(&req)?;
        let merchant = merchant_of(&who, &req.get_ref().merchant_id)?;
        let c = self.complaints.credit(&merchant).await.map_err(status_of)?;
        Ok(Response::new(pb::GetCreditScoreResponse { credit: Some(credit_to_pb(c)) }))
    }

    async fn adjust_credit_score(
        &self,
        req: Request<pb::AdjustCreditScoreRequest>,
    ) -> Result<Response<pb::AdjustCreditScoreResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = merchant_of(&who, &r.merchant_id)?;
        if r.delta == 0 || r.delta.abs() > autodebit_domain::credit::MAX {
            return Err(invalid(
                "delta",
                format!("must be non-zero, at most {} either way", autodebit_domain::credit::MAX),
            ));
        }
        let reason = r.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(invalid("reason", "must be 1 to 500 characters"));
        }
        let c = self.complaints.adjust_credit(&merchant, r.delta, reason).await.map_err(status_of)?;
        Ok(Response::new(pb::AdjustCreditScoreResponse { credit: Some(credit_to_pb(c)) }))
    }

    async fn lift_charging_freeze(
        &self,
        req: Request<pb::LiftChargingFreezeRequest>,
    ) -> Result<Response<pb::LiftChargingFreezeResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = merchant_of(&who, &r.merchant_id)?;
        let reason = r.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(invalid("reason", "must be 1 to 500 characters"));
        }
        let c = self.complaints.lift_freeze(&merchant, reason).await.map_err(status_of)?;
        Ok(Response::new(pb::LiftChargingFreezeResponse { credit: Some(credit_to_pb(c)) }))
    }
}
