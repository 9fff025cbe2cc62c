//! gRPC handlers of merchants: applications, reviews, API keys.
use super::request_cause;
use crate::app::merchants::Merchants;
use autodebit_domain::MerchantId;
use autodebit_domain::cycle::DEFAULT_ZONE;
use autodebit_domain::merchant::{Application, Document, Merchant, MerchantCommand, MerchantStatus, merchant_id_for};
use autodebit_proto::contracts::v1::{self as api, merchants_service_server::MerchantsService};
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec::merchant::{
    document_from_pb, document_to_pb, entity_from_pb, merchant_type_from_pb, merchant_type_to_pb,
};
use autodebit_runtime::grpc::invalid;
use tonic::{Request, Response, Status};

fn document(d: &pb::Document) -> Result<Document, Status> {
    document_from_pb(d).ok_or_else(|| invalid("documents.kind", "must be a DOCUMENT_KIND_… value"))
}

fn status_to_pb(s: MerchantStatus) -> api::MerchantStatus {
    match s {
        MerchantStatus::Applied => api::MerchantStatus::Applied,
        MerchantStatus::UnderReview => api::MerchantStatus::UnderReview,
        MerchantStatus::Approved => api::MerchantStatus::Approved,
        MerchantStatus::Rejected => api::MerchantStatus::Rejected,
        MerchantStatus::Suspended => api::MerchantStatus::Suspended,
    }
}

fn to_api(m: &Merchant, version: u64) -> api::Merchant {
    let a = &m.application;
    api::Merchant {
        merchant_id: a.merchant_id.to_string(),
        legal_name: a.legal_name.clone(),
        credit_code: a.credit_code.clone(),
        industry: a.industry.clone(),
        merchant_type: merchant_type_to_pb(a.merchant_type) as i32,
        documents: a.documents.iter().map(document_to_pb).collect(),
        contact_email: a.contact_email.clone(),
        time_zone: a.time_zone.clone(),
        status: status_to_pb(m.status) as i32,
        high_risk: m.high_risk,
        applied_at_ms: m.applied_at.timestamp_millis(),
        review_due_earliest_ms: m.review_due_earliest.timestamp_millis(),
        review_due_latest_ms: m.review_due_latest.timestamp_millis(),
        reason: m.reason.clone(),
        api_keys: m
            .api_keys
            .iter()
            .map(|k| api::ApiKey {
                key_id: k.key_id.clone(),
                label: k.label.clone(),
                issued_at_ms: k.issued_at.timestamp_millis(),
                revoked_at_ms: k.revoked_at.map(|t| t.timestamp_millis()).unwrap_or(0),
            })
            .collect(),
        version,
    }
}

pub struct MerchantsApi {
    app: Merchants,
}

impl MerchantsApi {
    pub fn new(app: Merchants) -> Self {
        MerchantsApi { app }
    }

    async fn visible(&self, principal: &Principal, raw: &str) -> Result<(Merchant, u64), Status> {
        let id = MerchantId::parse(raw).map_err(|e| invalid("merchant_id", e))?;
        let not_found = || Status::not_found(format!("merchant {id} not found"));
        if !principal.may_see(&id) {
            return Err(not_found());
        }
        match self.app.load(&id).await? {
            (Some(m), v) => Ok((m, v)),
            (None, _) => Err(not_found()),
        }
    }
}

#[tonic::async_trait]
impl MerchantsService for MerchantsApi {
    async fn apply_merchant(
        &self,
        req: Request<api::ApplyMerchantRequest>,
    ) -> Result<Response<api::ApplyMerchantResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        let entity = entity_from_pb(r.entity)
            .ok_or_else(|| invalid("entity", "must be ENTITY_KIND_ENTERPRISE or ENTITY_KIND_INDIVIDUAL"))?;
        let merchant_type = merchant_type_from_pb(r.merchant_type)
            .ok_or_else(|| invalid("merchant_type", "must be a MERCHANT_TYPE_… value"))?;
        let documents = r.documents.iter().map(document).collect::<Result<Vec<_>, _>>()?;
        let application = Application {
            merchant_id: merchant_id_for(&r.credit_code),
            legal_name: r.legal_name,
            credit_code: r.credit_code,
            entity,
            industry: r.industry,
            merchant_type,
            documents,
            contact_email: r.contact_email,
            time_zone: if r.time_zone.is_empty() { DEFAULT_ZONE.to_string() } else { r.time_zone },
        };
        let (m, v) = self.app.apply(application, &r.idempotency_key, &cause).await?;
        Ok(Response::new(api::ApplyMerchantResponse { merchant: Some(to_api(&m, v)) }))
    }

    async fn get_merchant(
        &self,
        req: Request<api::GetMerchantRequest>,
    ) -> Result<Response<api::GetMerchantResponse>, Status> {
        let principal = caller(&req)?;
        let (m, v) = self.visible(&principal, &req.get_ref().merchant_id).await?;
        Ok(Response::new(api::GetMerchantResponse { merchant: Some(to_api(&m, v)) }))
    }

    async fn list_merchants(
        &self,
        req: Request<api::ListMerchantsRequest>,
    ) -> Result<Response<api::ListMerchantsResponse>, Status> {
        let r = req.into_inner();
        let status = match api::MerchantStatus::try_from(r.status) {
            Ok(api::MerchantStatus::Unspecified) => None,
            Ok(api::MerchantStatus::Applied) => Some(MerchantStatus::Applied),
            Ok(api::MerchantStatus::UnderReview) => Some(MerchantStatus::UnderReview),
            Ok(api::MerchantStatus::Approved) => Some(MerchantStatus::Approved),
            Ok(api::MerchantStatus::Rejected) => Some(MerchantStatus::Rejected),
            Ok(api::MerchantStatus::Suspended) => Some(MerchantStatus::Suspended),
            Err(_) => return Err(invalid("status", "must be a MERCHANT_STATUS_… value")),
        };
        let limit = crate::store::page_size(r.page_size);
        let (found, fetched) = self.app.list(&r.page_token, status, limit).await?;
        let merchants: Vec<api::Merchant> = found.iter().map(|(m, v)| to_api(m, *v)).collect();
        let next_page_token =
            crate::store::next_page_token(fetched, limit, merchants.last().map(|m| m.merchant_id.as_str()));
        Ok(Response::new(api::ListMerchantsResponse { merchants, next_page_token }))
    }

    async fn file_merchant_document(
        &self,
        req: Request<api::FileMerchantDocumentRequest>,
    ) -> Result<Response<api::FileMerchantDocumentResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        let id = MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        let doc = document(r.document.as_ref().ok_or_else(|| invalid("document", "is required"))?)?;
        let (m, v) = self.app.execute(&id, MerchantCommand::FileDocument(doc), &cause).await?;
        Ok(Response::new(api::FileMerchantDocumentResponse { merchant: Some(to_api(&m, v)) }))
    }

    async fn review_merchant(
        &self,
        req: Request<api::ReviewMerchantRequest>,
    ) -> Result<Response<api::ReviewMerchantResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        let id = MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        let command = match api::ReviewAction::try_from(r.action) {
            Ok(api::ReviewAction::Start) => MerchantCommand::StartReview,
            Ok(api::ReviewAction::Approve) => MerchantCommand::Approve,
            Ok(api::ReviewAction::Reject) => MerchantCommand::Reject { reason: r.reason },
            Ok(api::ReviewAction::Suspend) => MerchantCommand::Suspend { reason: r.reason },
            Ok(api::ReviewAction::Reinstate) => MerchantCommand::Reinstate,
            _ => return Err(invalid("action", "must be a REVIEW_ACTION_… value")),
        };
        let (m, v, api_key) = self.app.review(&id, command, &cause).await?;
        Ok(Response::new(api::ReviewMerchantResponse { merchant: Some(to_api(&m, v)), api_key }))
    }

    async fn issue_api_key(
        &self,
        req: Request<api::IssueApiKeyRequest>,
    ) -> Result<Response<api::IssueApiKeyResponse>, Status> {
        let principal = caller(&req)?;
        let id = principal.merchant()?.clone();
        let cause = request_cause(&req);
        let label = req.into_inner().label;
        let (key_id, api_key) = self.app.issue_api_key(&id, label, &cause).await?;
        Ok(Response::new(api::IssueApiKeyResponse { key_id, api_key }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<api::RevokeApiKeyRequest>,
    ) -> Result<Response<api::RevokeApiKeyResponse>, Status> {
        let principal = caller(&req)?;
        let id = principal.merchant()?.clone();
        let cause = request_cause(&req);
        let key_id = req.into_inner().key_id;
        if key_id.is_empty() {
            return Err(invalid("key_id", "is required"));
        }
        self.app.execute(&id, MerchantCommand::RevokeApiKey { key_id }, &cause).await?;
        Ok(Response::new(api::RevokeApiKeyResponse {}))
    }
}
