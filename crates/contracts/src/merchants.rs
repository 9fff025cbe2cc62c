//! Merchants: onboarding applications, their review, and API keys.
use autodebit_domain::cycle::DEFAULT_ZONE;
use autodebit_domain::merchant::{
    self, Application, Document, DocumentKind, EntityKind, IndustryPolicy, Merchant, MerchantCommand, MerchantError,
    MerchantEvent, MerchantStatus, MerchantType,
};
use autodebit_domain::{MerchantId, clock::from_millis};
use autodebit_eventstore::{ExpectedVersion, Value};
use autodebit_proto::EventKind;
use autodebit_proto::contracts::v1::{self as api, merchants_service_server::MerchantsService};
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller, new_api_key};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::grpc::{internal, invalid, store_error};
use tonic::{Request, Response, Status};

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x51d3_0c7e_2a4b_4f19_9e88_03b7_c6a1_d250);

/// A merchant's id derives from its credit code: one company, one merchant.
pub fn merchant_id_for(credit_code: &str) -> MerchantId {
    let id = format!("mch_{}", uuid::Uuid::new_v5(&NAMESPACE, credit_code.as_bytes()).simple());
    // "mch_" and 32 hex digits always parse.
    MerchantId::parse(&id).expect("derived merchant ids are valid")
}

pub fn stream(id: &MerchantId) -> String {
    format!("merchant-{id}")
}

// === conversions ===

fn document_kind_from_pb(raw: i32) -> Option<DocumentKind> {
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

fn document_kind_to_pb(k: DocumentKind) -> pb::DocumentKind {
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

fn document_from_pb(d: &pb::Document) -> Result<Document, Status> {
    let kind =
        document_kind_from_pb(d.kind).ok_or_else(|| invalid("documents.kind", "must be a DOCUMENT_KIND_… value"))?;
    Ok(Document { kind, sha256: d.sha256.clone(), location: d.location.clone() })
}

fn document_to_pb(d: &Document) -> pb::Document {
    pb::Document { kind: document_kind_to_pb(d.kind) as i32, sha256: d.sha256.clone(), location: d.location.clone() }
}

fn merchant_type_from_pb(raw: i32) -> Option<MerchantType> {
    Some(match pb::MerchantType::try_from(raw).ok()? {
        pb::MerchantType::Unspecified => return None,
        pb::MerchantType::ECommerce => MerchantType::ECommerce,
        pb::MerchantType::LocalServices => MerchantType::LocalServices,
        pb::MerchantType::PaidContent => MerchantType::PaidContent,
        pb::MerchantType::Education => MerchantType::Education,
        pb::MerchantType::Other => MerchantType::Other,
    })
}

fn merchant_type_to_pb(t: MerchantType) -> pb::MerchantType {
    match t {
        MerchantType::ECommerce => pb::MerchantType::ECommerce,
        MerchantType::LocalServices => pb::MerchantType::LocalServices,
        MerchantType::PaidContent => pb::MerchantType::PaidContent,
        MerchantType::Education => pb::MerchantType::Education,
        MerchantType::Other => pb::MerchantType::Other,
    }
}

fn entity_from_pb(raw: i32) -> Option<EntityKind> {
    match pb::EntityKind::try_from(raw).ok()? {
        pb::EntityKind::Unspecified => None,
        pb::EntityKind::Enterprise => Some(EntityKind::Enterprise),
        pb::EntityKind::Individual => Some(EntityKind::Individual),
    }
}

fn entity_to_pb(e: EntityKind) -> pb::EntityKind {
    match e {
        EntityKind::Enterprise => pb::EntityKind::Enterprise,
        EntityKind::Individual => pb::EntityKind::Individual,
    }
}

fn status_name(s: MerchantStatus) -> &'static str {
    match s {
        MerchantStatus::Applied => "applied",
        MerchantStatus::UnderReview => "under_review",
        MerchantStatus::Approved => "approved",
        MerchantStatus::Rejected => "rejected",
        MerchantStatus::Suspended => "suspended",
    }
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

fn event_to_pb(id: &MerchantId, e: &MerchantEvent) -> pb::Event {
    use pb::MerchantReviewOutcome as O;
    let reviewed = |outcome: O, reason: &str, at: &autodebit_domain::Timestamp| {
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

fn event_from_pb(kind: &EventKind) -> Option<MerchantEvent> {
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
                documents: a.documents.iter().filter_map(|d| document_from_pb(d).ok()).collect(),
                contact_email: a.contact_email.clone(),
                time_zone: a.time_zone.clone(),
            },
            high_risk: a.high_risk,
            review_due_earliest: from_millis(a.review_due_earliest_ms),
            review_due_latest: from_millis(a.review_due_latest_ms),
            at: from_millis(a.applied_at_ms),
        },
        EventKind::MerchantDocumentFiled(d) => MerchantEvent::DocumentFiled {
            document: document_from_pb(d.document.as_ref()?).ok()?,
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

fn to_status(e: MerchantError) -> Status {
    match e {
        MerchantError::Invalid { field, problem } => invalid(field, problem),
        MerchantError::AlreadyApplied => Status::already_exists("this company has already applied"),
        MerchantError::NotFound => Status::not_found("no such merchant"),
        MerchantError::UnknownKey(_) => Status::not_found(e.to_string()),
        MerchantError::WrongStatus(..) | MerchantError::SpecialFilingMissing => {
            Status::failed_precondition(e.to_string())
        }
    }
}

// === application ===

#[derive(Clone)]
pub struct Merchants {
    platform: Platform,
    policy: IndustryPolicy,
}

impl Merchants {
    pub fn new(platform: Platform, policy: IndustryPolicy) -> Self {
        Merchants { platform, policy }
    }

    pub async fn load(&self, id: &MerchantId) -> Result<(Option<Merchant>, u64), Status> {
        let records = self.platform.store.read_stream(&stream(id), 0).await.map_err(store_error)?;
        let version = records.last().map(|r| r.version).unwrap_or(0);
        let state = records
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| event_from_pb(&d.kind))
            .fold(None, |s, e| merchant::apply(s, &e));
        Ok((state, version))
    }

    /// Decides `command`, appends its events and keeps the merchant and key tables in step,
    /// in one transaction. Returns the new state and version.
    pub async fn execute(
        &self,
        id: &MerchantId,
        command: MerchantCommand,
        cause: &Cause,
    ) -> Result<(Merchant, u64), Status> {
        let (state, version) = self.load(id).await?;
        let now = self.platform.clock.now();
        let events = merchant::decide(state.as_ref(), command, &self.policy, now).map_err(to_status)?;
        let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
        let encoded = events.iter().map(|e| codec::encode(event_to_pb(id, e), cause, now.timestamp_millis())).collect();
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let out = tx.append(&stream(id), expected, encoded).await.map_err(|e| {
            if e.is_conflict() && version == 0 {
                Status::already_exists("this company has already applied")
            } else {
                store_error(e)
            }
        })?;
        let new_state = events.iter().fold(state, merchant::apply).ok_or_else(|| internal("merchant vanished"))?;
        for e in &events {
            match e {
                MerchantEvent::ApiKeyIssued { key_id, secret_sha256, .. } => {
                    tx.execute(
                        "INSERT INTO contracts_api_keys (key_id, merchant_id, secret_sha256, revoked) VALUES ($1, $2, $3, 0)",
                        &[Value::from(key_id), Value::from(id.to_string()), Value::from(secret_sha256)],
                    )
                    .await
                    .map_err(store_error)?;
                }
                MerchantEvent::ApiKeyRevoked { key_id, .. } => {
                    tx.execute("UPDATE contracts_api_keys SET revoked = 1 WHERE key_id = $1", &[Value::from(key_id)])
                        .await
                        .map_err(store_error)?;
                }
                _ => {}
            }
        }
        tx.execute(
            "INSERT INTO contracts_merchants (merchant_id, status, applied_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (merchant_id) DO UPDATE SET status = excluded.status",
            &[
                Value::from(id.to_string()),
                Value::from(status_name(new_state.status)),
                Value::Int(new_state.applied_at.timestamp_millis()),
            ],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok((new_state, out.last_version))
    }
}

// === gRPC ===

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

fn cause<T>(req: &Request<T>) -> Cause {
    crate::api::request_cause(req)
}

#[tonic::async_trait]
impl MerchantsService for MerchantsApi {
    async fn apply_merchant(
        &self,
        req: Request<api::ApplyMerchantRequest>,
    ) -> Result<Response<api::ApplyMerchantResponse>, Status> {
        let cause = cause(&req);
        let r = req.into_inner();
        let entity = entity_from_pb(r.entity)
            .ok_or_else(|| invalid("entity", "must be ENTITY_KIND_ENTERPRISE or ENTITY_KIND_INDIVIDUAL"))?;
        let merchant_type = merchant_type_from_pb(r.merchant_type)
            .ok_or_else(|| invalid("merchant_type", "must be a MERCHANT_TYPE_… value"))?;
        let documents = r.documents.iter().map(document_from_pb).collect::<Result<Vec<_>, _>>()?;
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
        merchant::check_application(&application, &self.app.policy).map_err(to_status)?;
        let id = application.merchant_id.clone();
        match self.app.execute(&id, MerchantCommand::Apply(application.clone()), &cause).await {
            Ok((m, v)) => Ok(Response::new(api::ApplyMerchantResponse { merchant: Some(to_api(&m, v)) })),
            Err(s) if s.code() == tonic::Code::AlreadyExists && !r.idempotency_key.is_empty() => {
                // A repeated request with its idempotency key gets the original application.
                let (existing, v) = self.app.load(&id).await?;
                match existing {
                    Some(m) if m.application == application => {
                        Ok(Response::new(api::ApplyMerchantResponse { merchant: Some(to_api(&m, v)) }))
                    }
                    _ => Err(s),
                }
            }
            Err(s) => Err(s),
        }
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
            Ok(s) => Some(match s {
                api::MerchantStatus::Applied => "applied",
                api::MerchantStatus::UnderReview => "under_review",
                api::MerchantStatus::Approved => "approved",
                api::MerchantStatus::Rejected => "rejected",
                _ => "suspended",
            }),
            Err(_) => return Err(invalid("status", "must be a MERCHANT_STATUS_… value")),
        };
        let limit = crate::store::page_size(r.page_size);
        let rows = self
            .app
            .platform
            .store
            .query(
                "SELECT merchant_id FROM contracts_merchants WHERE merchant_id > $1 AND ($2 = '' OR status = $2)
                 ORDER BY merchant_id LIMIT $3",
                &[Value::from(r.page_token.as_str()), Value::from(status.unwrap_or("")), Value::Int(limit + 1)],
            )
            .await
            .map_err(store_error)?;
        let mut merchants = Vec::new();
        for row in rows.iter().take(limit as usize) {
            let id = MerchantId::parse(row.text(0).unwrap_or_default()).map_err(internal)?;
            if let (Some(m), v) = self.app.load(&id).await? {
                merchants.push(to_api(&m, v));
            }
        }
        let next_page_token =
            crate::store::next_page_token(rows.len(), limit, merchants.last().map(|m| m.merchant_id.as_str()));
        Ok(Response::new(api::ListMerchantsResponse { merchants, next_page_token }))
    }

    async fn file_merchant_document(
        &self,
        req: Request<api::FileMerchantDocumentRequest>,
    ) -> Result<Response<api::FileMerchantDocumentResponse>, Status> {
        let cause = cause(&req);
        let r = req.into_inner();
        let id = MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        let doc = document_from_pb(r.document.as_ref().ok_or_else(|| invalid("document", "is required"))?)?;
        let (m, v) = self.app.execute(&id, MerchantCommand::FileDocument(doc), &cause).await?;
        Ok(Response::new(api::FileMerchantDocumentResponse { merchant: Some(to_api(&m, v)) }))
    }

    async fn review_merchant(
        &self,
        req: Request<api::ReviewMerchantRequest>,
    ) -> Result<Response<api::ReviewMerchantResponse>, Status> {
        let cause = cause(&req);
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
        let approving = command == MerchantCommand::Approve;
        let (mut m, mut v) = self.app.execute(&id, command, &cause).await?;
        let mut api_key = String::new();
        if approving {
            let (key_id, token, hash) = new_api_key();
            (m, v) = self
                .app
                .execute(
                    &id,
                    MerchantCommand::IssueApiKey { key_id, secret_sha256: hash, label: "initial".into() },
                    &cause,
                )
                .await?;
            api_key = token;
        }
        Ok(Response::new(api::ReviewMerchantResponse { merchant: Some(to_api(&m, v)), api_key }))
    }

    async fn issue_api_key(
        &self,
        req: Request<api::IssueApiKeyRequest>,
    ) -> Result<Response<api::IssueApiKeyResponse>, Status> {
        let principal = caller(&req)?;
        let id = principal.merchant()?.clone();
        let cause = cause(&req);
        let (key_id, token, hash) = new_api_key();
        let label = req.into_inner().label;
        self.app
            .execute(&id, MerchantCommand::IssueApiKey { key_id: key_id.clone(), secret_sha256: hash, label }, &cause)
            .await?;
        Ok(Response::new(api::IssueApiKeyResponse { key_id, api_key: token }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<api::RevokeApiKeyRequest>,
    ) -> Result<Response<api::RevokeApiKeyResponse>, Status> {
        let principal = caller(&req)?;
        let id = principal.merchant()?.clone();
        let cause = cause(&req);
        let key_id = req.into_inner().key_id;
        if key_id.is_empty() {
            return Err(invalid("key_id", "is required"));
        }
        self.app.execute(&id, MerchantCommand::RevokeApiKey { key_id }, &cause).await?;
        Ok(Response::new(api::RevokeApiKeyResponse {}))
    }
}
