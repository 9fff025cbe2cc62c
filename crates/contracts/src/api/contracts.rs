//! gRPC handlers of contracts and signing sessions: authenticate, parse the request into
//! domain types, call the application, map the result.
use super::{MAX_CONTRACT_CODE_LEN, MAX_KEY_LEN, request_cause};
use crate::app::contracts::{AppError, Contracts, SignRequest};
use crate::app::signing::{Loaded, OpenRequest, Signing};
use crate::store::contracts::status_name;
use autodebit_domain::contract::{Contract as DomainContract, ContractCommand, ContractStatus};
use autodebit_domain::plan;
use autodebit_domain::signing::{self, SessionStatus, SigningCommand};
use autodebit_domain::{ContractId, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId};
use autodebit_proto::contracts::v1::{self as pb, contracts_service_server::ContractsService};
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec::{self, signing::channel_from_pb, signing::channel_to_pb, signing::step_to_pb};
use autodebit_runtime::grpc::invalid;
use tonic::{Request, Response, Status};

pub struct ContractsApi {
    app: Contracts,
    signing: Signing,
}

impl ContractsApi {
    pub fn new(app: Contracts, signing: Signing) -> Self {
        ContractsApi { app, signing }
    }
}

pub fn to_pb(c: &DomainContract, version: u64) -> pb::Contract {
    let (mode, remark, at) = match &c.termination {
        Some((m, r, t)) => (codec::termination_mode_to_pb(*m) as i32, r.clone(), t.timestamp_millis()),
        None => (0, String::new(), 0),
    };
    pb::Contract {
        contract_id: c.contract_id.to_string(),
        merchant_id: c.merchant_id.to_string(),
        payer_id: c.payer_id.to_string(),
        amount_per_cycle: Some(codec::money_to_pb(c.amount_per_cycle)),
        cycle: codec::cycle_to_pb(c.cycle) as i32,
        state: state_to_pb(c.status) as i32,
        signed_at_ms: c.signed_at.timestamp_millis(),
        terminated_at_ms: at,
        termination_mode: mode,
        termination_remark: remark,
        version,
        merchant_contract_code: c.merchant_contract_code.clone(),
        plan_id: c.plan_id.clone(),
        expires_at_ms: c.expires_at.map(|t| t.timestamp_millis()).unwrap_or(0),
        suspension_reason: c.suspension_reason.clone(),
        zombie_flagged_at_ms: c.zombie_flagged_at.map(|t| t.timestamp_millis()).unwrap_or(0),
        ended_at_ms: c.ended_at.map(|t| t.timestamp_millis()).unwrap_or(0),
    }
}

fn state_to_pb(s: ContractStatus) -> pb::ContractState {
    match s {
        ContractStatus::Active => pb::ContractState::Active,
        ContractStatus::Suspended => pb::ContractState::Suspended,
        ContractStatus::Terminated => pb::ContractState::Terminated,
        ContractStatus::Expired => pb::ContractState::Expired,
    }
}

fn parse_contract_id(raw: &str) -> Result<ContractId, Status> {
    ContractId::parse(raw).map_err(|e| invalid("contract_id", e))
}

/// A session as the API shows it.
pub fn session_to_pb(l: &Loaded, public_url: &str) -> pb::SigningSession {
    let o = &l.opened;
    pb::SigningSession {
        session_id: o.session_id.clone(),
        merchant_id: o.merchant_id.clone(),
        plan_id: o.plan_id.clone(),
        payer_id: o.payer_id.clone(),
        channel: channel_to_pb(o.channel) as i32,
        state: match l.session.status {
            SessionStatus::Open => pb::SigningState::Open,
            SessionStatus::Held => pb::SigningState::HeldForReview,
            SessionStatus::Confirmed => pb::SigningState::Confirmed,
            SessionStatus::Abandoned => pb::SigningState::Abandoned,
            SessionStatus::Expired => pb::SigningState::Expired,
            SessionStatus::Rejected => pb::SigningState::Rejected,
        } as i32,
        authorization_url: format!("{}/sign/{}", public_url.trim_end_matches('/'), o.session_id),
        expires_at_ms: o.expires_at.timestamp_millis(),
        agreement_ticked: l.session.ticked,
        sms_verification_required: l.session.sms_required && !l.session.sms_verified,
        contract_id: l.contract_id.clone(),
        steps: l
            .session
            .steps
            .iter()
            .map(|(s, d, t)| pb::SigningStepEntry {
                step: step_to_pb(*s) as i32,
                detail: d.clone(),
                at_ms: t.timestamp_millis(),
            })
            .collect(),
        return_url: o.return_url.clone(),
        provider_signing_url: String::new(),
    }
}

/// Parses a client IP, naming the field.
fn parse_ip(raw: &str) -> Result<std::net::IpAddr, Status> {
    raw.parse().map_err(|_| invalid("client_ip", "must be an IPv4 or IPv6 address"))
}

impl ContractsApi {
    /// The contract, if the caller may see it: another merchant's contract is answered as one
    /// that does not exist.
    async fn visible(&self, principal: &Principal, id: ContractId) -> Result<(DomainContract, u64), Status> {
        let (c, v) = self.app.get(id).await?;
        if !principal.may_see(&c.merchant_id) {
            return Err(AppError::NotFound(id).into());
        }
        Ok((c, v))
    }

    /// Authenticates, checks the caller may act on the contract, runs the command.
    async fn act<T>(
        &self,
        req: &Request<T>,
        raw_id: &str,
        expected_version: Option<u64>,
        command: impl FnOnce(&DomainContract) -> Result<ContractCommand, Status>,
    ) -> Result<pb::Contract, Status> {
        let principal = caller(req)?;
        let id = parse_contract_id(raw_id)?;
        let (c, _) = self.visible(&principal, id).await?;
        let command = command(&c)?;
        let (c, v) = self.app.execute(id, expected_version, command, &request_cause(req)).await?;
        Ok(to_pb(&c, v))
    }
}

#[tonic::async_trait]
impl ContractsService for ContractsApi {
    async fn sign_contract(
        &self,
        req: Request<pb::SignContractRequest>,
    ) -> Result<Response<pb::SignContractResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        let merchant_id = MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        let payer_id = PayerId::parse(&r.payer_id).map_err(|e| invalid("payer_id", e))?;
        let amount: Money =
            codec::money_from_pb(r.amount_per_cycle.as_ref()).map_err(|e| invalid("amount_per_cycle", e))?;
        if amount.minor_units() <= 0 {
            return Err(invalid("amount_per_cycle.minor_units", "must be positive"));
        }
        if amount.minor_units() > MAX_CHARGE_CNY_FEN {
            return Err(invalid(
                "amount_per_cycle.minor_units",
                format!(
                    "{} is above the per-charge cap of {MAX_CHARGE_CNY_FEN} minor units ({})",
                    amount.minor_units(),
                    Money::new(MAX_CHARGE_CNY_FEN, amount.currency())
                ),
            ));
        }
        let cycle = codec::cycle_from_pb(r.cycle).ok_or_else(|| {
            invalid("cycle", "must be one of CYCLE_DAILY, CYCLE_WEEKLY, CYCLE_MONTHLY, CYCLE_QUARTERLY, CYCLE_YEARLY")
        })?;
        check_lengths(&r.merchant_contract_code, &r.idempotency_key)?;
        let request = SignRequest {
            merchant_id,
            payer_id,
            amount_per_cycle: amount,
            cycle,
            merchant_contract_code: r.merchant_contract_code,
            plan_id: r.plan_id,
            idempotency_key: r.idempotency_key,
        };
        let (c, v) = self.app.sign(request, &cause).await?;
        Ok(Response::new(pb::SignContractResponse { contract: Some(to_pb(&c, v)) }))
    }

    async fn get_contract(
        &self,
        req: Request<pb::GetContractRequest>,
    ) -> Result<Response<pb::GetContractResponse>, Status> {
        let principal = caller(&req)?;
        let r = req.get_ref();
        let id = match (r.contract_id.as_str(), r.merchant_contract_code.as_str()) {
            ("", "") => return Err(invalid("contract_id", "give contract_id or merchant_contract_code")),
            ("", code) => {
                let merchant = principal.merchant().map_err(|_| {
                    invalid("merchant_contract_code", "is looked up within the calling merchant; use contract_id")
                })?;
                let raw =
                    self.app.by_code(merchant, code).await?.ok_or_else(|| {
                        Status::not_found(format!("no contract with merchant_contract_code {code:?}"))
                    })?;
                parse_contract_id(&raw)?
            }
            (raw, _) => parse_contract_id(raw)?,
        };
        let (c, v) = self.visible(&principal, id).await?;
        Ok(Response::new(pb::GetContractResponse { contract: Some(to_pb(&c, v)) }))
    }

    async fn list_contracts(
        &self,
        req: Request<pb::ListContractsRequest>,
    ) -> Result<Response<pb::ListContractsResponse>, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        let r = req.into_inner();
        let state = match pb::ContractState::try_from(r.state) {
            Ok(pb::ContractState::Unspecified) => "",
            Ok(pb::ContractState::Active) => status_name(ContractStatus::Active),
            Ok(pb::ContractState::Suspended) => status_name(ContractStatus::Suspended),
            Ok(pb::ContractState::Terminated) => status_name(ContractStatus::Terminated),
            Ok(pb::ContractState::Expired) => status_name(ContractStatus::Expired),
            Err(_) => return Err(invalid("state", "must be a CONTRACT_STATE_… value")),
        };
        if !r.page_token.is_empty() {
            parse_contract_id(&r.page_token).map_err(|_| invalid("page_token", "is not a token this call returned"))?;
        }
        let limit = crate::store::page_size(r.page_size);
        let (found, fetched) = self.app.list(&merchant, &r.page_token, state, &r.payer_id, &r.plan_id, limit).await?;
        let contracts: Vec<pb::Contract> = found.iter().map(|(c, v)| to_pb(c, *v)).collect();
        let next_page_token =
            crate::store::next_page_token(fetched, limit, contracts.last().map(|c| c.contract_id.as_str()));
        Ok(Response::new(pb::ListContractsResponse { contracts, next_page_token }))
    }

    async fn modify_contract(
        &self,
        req: Request<pb::ModifyContractRequest>,
    ) -> Result<Response<pb::ModifyContractResponse>, Status> {
        let r = req.get_ref().clone();
        let amount: Money =
            codec::money_from_pb(r.amount_per_cycle.as_ref()).map_err(|e| invalid("amount_per_cycle", e))?;
        let new_cycle = match r.cycle {
            0 => None,
            raw => Some(codec::cycle_from_pb(raw).ok_or_else(|| invalid("cycle", "must be a CYCLE_… value"))?),
        };
        let principal = caller(&req)?;
        let id = parse_contract_id(&r.contract_id)?;
        self.visible(&principal, id).await?;
        let (c, v) = self.app.modify(id, r.expected_version, amount, new_cycle, &request_cause(&req)).await?;
        let contract = to_pb(&c, v);
        Ok(Response::new(pb::ModifyContractResponse { contract: Some(contract) }))
    }

    async fn suspend_contract(
        &self,
        req: Request<pb::SuspendContractRequest>,
    ) -> Result<Response<pb::SuspendContractResponse>, Status> {
        let r = req.get_ref().clone();
        if r.reason.trim().is_empty() || r.reason.chars().count() > 256 {
            return Err(invalid("reason", "must be 1 to 256 characters"));
        }
        let contract = self
            .act(&req, &r.contract_id, r.expected_version, |_| {
                Ok(ContractCommand::Suspend { reason: r.reason.clone() })
            })
            .await?;
        Ok(Response::new(pb::SuspendContractResponse { contract: Some(contract) }))
    }

    async fn resume_contract(
        &self,
        req: Request<pb::ResumeContractRequest>,
    ) -> Result<Response<pb::ResumeContractResponse>, Status> {
        let r = req.get_ref().clone();
        let contract = self.act(&req, &r.contract_id, r.expected_version, |_| Ok(ContractCommand::Resume)).await?;
        Ok(Response::new(pb::ResumeContractResponse { contract: Some(contract) }))
    }

    async fn terminate_contract(
        &self,
        req: Request<pb::TerminateContractRequest>,
    ) -> Result<Response<pb::TerminateContractResponse>, Status> {
        let r = req.get_ref().clone();
        let mode = codec::termination_mode_from_pb(r.mode).ok_or_else(|| {
            invalid("mode", "must be one of TERMINATION_MODE_PAYER, _MERCHANT, _CUSTOMER_SERVICE, _PROVIDER, _PLATFORM")
        })?;
        if r.remark.chars().count() > 256 {
            return Err(invalid("remark", "is longer than 256 characters"));
        }
        let contract = self
            .act(&req, &r.contract_id, r.expected_version, |_| {
                Ok(ContractCommand::Terminate { mode, remark: r.remark.clone() })
            })
            .await?;
        Ok(Response::new(pb::TerminateContractResponse { contract: Some(contract) }))
    }

    async fn create_signing_session(
        &self,
        req: Request<pb::CreateSigningSessionRequest>,
    ) -> Result<Response<pb::CreateSigningSessionResponse>, Status> {
        let session = self.create_session(req).await?;
        Ok(Response::new(pb::CreateSigningSessionResponse { session: Some(session) }))
    }

    async fn get_signing_session(
        &self,
        req: Request<pb::GetSigningSessionRequest>,
    ) -> Result<Response<pb::GetSigningSessionResponse>, Status> {
        let principal = caller(&req)?;
        let l = self.visible_session(&principal, &req.get_ref().session_id).await?;
        Ok(Response::new(pb::GetSigningSessionResponse { session: Some(self.session_to_api(&l).await?) }))
    }

    async fn review_signing_session(
        &self,
        req: Request<pb::ReviewSigningSessionRequest>,
    ) -> Result<Response<pb::ReviewSigningSessionResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        self.visible_session(&Principal::Operator, &r.session_id).await?;
        let command = if r.approve {
            SigningCommand::Approve
        } else {
            if r.reason.trim().is_empty() {
                return Err(invalid("reason", "a rejection needs a reason"));
            }
            SigningCommand::Reject { reason: r.reason }
        };
        let l = self.signing.step(&r.session_id, command, &cause).await?;
        Ok(Response::new(pb::ReviewSigningSessionResponse {
            session: Some(session_to_pb(&l, &self.signing.public_url)),
        }))
    }
}

impl ContractsApi {
    async fn visible_session(&self, principal: &Principal, id: &str) -> Result<Loaded, Status> {
        if id.is_empty() {
            return Err(invalid("session_id", "is required"));
        }
        let l =
            self.signing.load(id).await?.ok_or_else(|| Status::not_found(format!("signing session {id} not found")))?;
        let owner = MerchantId::parse(&l.opened.merchant_id).map_err(autodebit_runtime::grpc::internal)?;
        if !principal.may_see(&owner) {
            return Err(Status::not_found(format!("signing session {id} not found")));
        }
        Ok(l)
    }

    pub async fn create_session(
        &self,
        req: Request<pb::CreateSigningSessionRequest>,
    ) -> Result<pb::SigningSession, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        crate::app::merchants::require_signing_allowed(&self.app.platform, &merchant).await?;
        let cause = request_cause(&req);
        let r = req.into_inner();
        if r.plan_id.is_empty() {
            return Err(invalid("plan_id", "is required"));
        }
        let (_, plan) = crate::app::plans::load(&self.app.platform, &r.plan_id)
            .await?
            .ok_or_else(|| invalid("plan_id", format!("plan {} not found", r.plan_id)))?;
        if plan.merchant_id != merchant {
            return Err(invalid("plan_id", format!("plan {} not found", r.plan_id)));
        }
        let signs_at_wechatpay =
            plan.provider == plan::WECHATPAY && self.signing.wechatpay.of_merchant(merchant.as_str()).is_some();
        if plan.provider != plan::SIMULATOR && !signs_at_wechatpay {
            return Err(Status::failed_precondition(format!(
                "plans on the {} provider sign through the provider's own entry, and this merchant has no {} account \
                 configured (--wechatpay-config)",
                plan.provider, plan.provider
            )));
        }
        let payer = PayerId::parse(&r.payer_id).map_err(|e| invalid("payer_id", e))?;
        let channel = channel_from_pb(r.channel)
            .ok_or_else(|| invalid("channel", "must be SIGNING_CHANNEL_H5, _MINI_PROGRAM or _APP"))?;
        if r.device_id.is_empty() || r.device_id.len() > 128 {
            return Err(invalid("device_id", "must be 1 to 128 characters"));
        }
        let client_ip = parse_ip(&r.client_ip)?;
        if !(r.return_url.starts_with("https://") || r.return_url.starts_with("http://")) || r.return_url.len() > 1024 {
            return Err(invalid("return_url", "must be an http(s) URL of at most 1024 characters"));
        }
        let language = match r.language.as_str() {
            "" | "zh" => "zh",
            "en" => "en",
            _ => return Err(invalid("language", "must be \"zh\" or \"en\"")),
        };
        if !r.payer_phone.is_empty() && !signing::is_e164(&r.payer_phone) {
            return Err(invalid(
                "payer_phone",
                format!(
                    "must be an E.164 number: + then {} to {} digits, e.g. +8613800138000",
                    signing::PHONE_MIN_DIGITS,
                    signing::PHONE_MAX_DIGITS
                ),
            ));
        }
        check_lengths(&r.merchant_contract_code, &r.idempotency_key)?;
        if !r.merchant_contract_code.is_empty()
            && self.app.by_code(&merchant, &r.merchant_contract_code).await?.is_some()
        {
            return Err(AppError::CodeTaken(r.merchant_contract_code).into());
        }
        let open = OpenRequest {
            merchant,
            plan,
            payer,
            channel,
            device_id: r.device_id,
            client_ip,
            return_url: r.return_url,
            language: language.to_string(),
            merchant_contract_code: r.merchant_contract_code,
            idempotency_key: r.idempotency_key,
            payer_phone: r.payer_phone,
        };
        let l = self.signing.open(open, &cause).await?;
        self.session_to_api(&l).await
    }

    /// A session as the API shows it, with WeChat Pay's signing entry where it signs there.
    async fn session_to_api(&self, l: &Loaded) -> Result<pb::SigningSession, Status> {
        let mut s = session_to_pb(l, &self.signing.public_url);
        if s.state == pb::SigningState::Open as i32 {
            s.provider_signing_url = crate::app::wechatpay::signing_url(&self.signing, l).await?;
        }
        Ok(s)
    }
}

/// The merchant's contract code and the request's idempotency key within their lengths.
fn check_lengths(merchant_contract_code: &str, idempotency_key: &str) -> Result<(), Status> {
    if merchant_contract_code.len() > MAX_CONTRACT_CODE_LEN {
        return Err(invalid("merchant_contract_code", format!("is longer than {MAX_CONTRACT_CODE_LEN} characters")));
    }
    if idempotency_key.len() > MAX_KEY_LEN {
        return Err(invalid("idempotency_key", format!("is longer than {MAX_KEY_LEN} characters")));
    }
    Ok(())
}
