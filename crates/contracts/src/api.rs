//! gRPC handlers of contracts: authenticate, parse the request into domain types, call the
//! application, map the result.
use crate::app::{AppError, Contracts, status_name};
use autodebit_domain::contract::{Contract as DomainContract, ContractCommand, ContractError, ContractStatus};
use autodebit_domain::modification::{self, Calendar};
use autodebit_domain::plan::ModificationRule;
use autodebit_domain::{ContractId, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId};
use autodebit_eventstore::Value;
use autodebit_proto::contracts::v1::{self as pb, contracts_service_server::ContractsService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct ContractsApi {
    app: Contracts,
    signing: crate::signing::Signing,
}

impl ContractsApi {
    pub fn new(app: Contracts, signing: crate::signing::Signing) -> Self {
        ContractsApi { app, signing }
    }
}

const MAX_KEY_LEN: usize = 128;

pub fn to_status(e: AppError) -> Status {
    match e {
        AppError::NotFound(_) => Status::not_found(e.to_string()),
        AppError::VersionMismatch { .. } => Status::aborted(e.to_string()),
        AppError::CodeTaken(_) => Status::already_exists(e.to_string()),
        AppError::Rule(ContractError::AboveCap { .. } | ContractError::NotPositive) => invalid("amount_per_cycle", &e),
        AppError::Rule(ContractError::Empty(field)) => invalid(field, "must not be empty"),
        AppError::Rule(ContractError::AlreadySigned) => Status::already_exists(e.to_string()),
        AppError::Rule(ContractError::NotSigned) => Status::not_found(e.to_string()),
        AppError::Rule(ContractError::Ended(_) | ContractError::WrongStatus(..) | ContractError::NotYetExpired(_)) => {
            Status::failed_precondition(e.to_string())
        }
        AppError::Store(e) => store_error(e),
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

pub fn request_cause<T>(req: &Request<T>) -> Cause {
    let id = req
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Cause::request(id)
}

/// The time zone a merchant bills in, as it applied with it.
async fn merchant_zone(platform: &Platform, merchant: &MerchantId) -> Result<chrono_tz::Tz, Status> {
    let records = platform.store.read_stream(&crate::merchants::stream(merchant), 0).await.map_err(store_error)?;
    let applied = records.into_iter().filter_map(codec::decode).find_map(|d| match d.kind {
        autodebit_proto::EventKind::MerchantApplied(a) => Some(a.time_zone),
        _ => None,
    });
    Ok(autodebit_domain::cycle::zone(&applied.unwrap_or_default()).unwrap_or(chrono_tz::Asia::Shanghai))
}

/// Refuses merchants that are not (or no longer) approved.
pub async fn require_approved(platform: &Platform, merchant: &MerchantId) -> Result<(), Status> {
    let rows = platform
        .store
        .query("SELECT status FROM contracts_merchants WHERE merchant_id = $1", &[Value::from(merchant.to_string())])
        .await
        .map_err(store_error)?;
    match rows.first().and_then(|r| r.text(0)) {
        Some("approved") => Ok(()),
        Some(s) => Err(Status::failed_precondition(format!("merchant {merchant} is {s}, not approved"))),
        None => Err(Status::not_found(format!("merchant {merchant} not found"))),
    }
}

impl ContractsApi {
    /// The contract, if the caller may see it: another merchant's contract is answered as one
    /// that does not exist.
    async fn visible(&self, principal: &Principal, id: ContractId) -> Result<(DomainContract, u64), Status> {
        let (c, v) = self.app.get(id).await.map_err(to_status)?;
        if !principal.may_see(&c.merchant_id) {
            return Err(to_status(AppError::NotFound(id)));
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
        let (c, v) = self.app.execute(id, expected_version, command, &request_cause(req)).await.map_err(to_status)?;
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
        if r.merchant_contract_code.len() > 32 {
            return Err(invalid("merchant_contract_code", "is longer than 32 characters"));
        }
        if r.idempotency_key.len() > MAX_KEY_LEN {
            return Err(invalid("idempotency_key", format!("is longer than {MAX_KEY_LEN} characters")));
        }
        require_approved(&self.app.platform, &merchant_id).await?;
        let now = self.app.platform.clock.now();
        let mut expires_at = None;
        if !r.plan_id.is_empty() {
            let (_, plan) = crate::plans::load(&self.app.platform, &r.plan_id)
                .await?
                .ok_or_else(|| invalid("plan_id", format!("plan {} not found", r.plan_id)))?;
            if plan.merchant_id != merchant_id {
                return Err(invalid("plan_id", "belongs to another merchant"));
            }
            if amount.minor_units() > plan.per_charge_cap.minor_units() || amount.currency() != plan.currency() {
                return Err(invalid(
                    "amount_per_cycle.minor_units",
                    format!("is above the plan's per-charge cap of {}", plan.per_charge_cap),
                ));
            }
            expires_at = now.checked_add_signed(chrono::Duration::days(i64::from(plan.validity_days)));
        }
        let key = r.idempotency_key.as_str();
        // A repeated request with its idempotency key gets the original contract.
        let repeated = async |id: ContractId| -> Result<Response<pb::SignContractResponse>, Status> {
            let (c, v) = self.app.get(id).await.map_err(to_status)?;
            let same = c.merchant_id == merchant_id
                && c.payer_id == payer_id
                && c.amount_per_cycle == amount
                && c.cycle == cycle
                && c.merchant_contract_code == r.merchant_contract_code
                && c.plan_id == r.plan_id;
            if same {
                Ok(Response::new(pb::SignContractResponse { contract: Some(to_pb(&c, v)) }))
            } else {
                Err(Status::already_exists("idempotency_key was already used for a different contract"))
            }
        };
        if !key.is_empty()
            && let Some(id) = self.app.signed_under_key(&merchant_id, key).await.map_err(to_status)?
        {
            return repeated(id).await;
        }
        // Time-ordered: contracts signed around the same time, and everything keyed by them
        // (charges, notices, schedules), sit together in the indexes. Under a key the rest is
        // derived, so the same imports on a test clock sign the same ids (and charges).
        let id = if key.is_empty() {
            ContractId::generate()
        } else {
            ContractId::for_import(&merchant_id, key, now.timestamp_millis())
        };
        let command = ContractCommand::Sign {
            contract_id: id,
            merchant_id: merchant_id.clone(),
            payer_id: payer_id.clone(),
            amount_per_cycle: amount,
            cycle,
            merchant_contract_code: r.merchant_contract_code.clone(),
            plan_id: r.plan_id.clone(),
            expires_at,
        };
        let signed = if key.is_empty() {
            self.app.execute(id, None, command, &cause).await.map(Some)
        } else {
            self.app.sign_under_key(&merchant_id, key, id, command, &cause).await
        };
        match signed.map_err(to_status)? {
            Some((c, v)) => Ok(Response::new(pb::SignContractResponse { contract: Some(to_pb(&c, v)) })),
            // Another request with the key signed first, between the look and the write.
            None => match self.app.signed_under_key(&merchant_id, key).await.map_err(to_status)? {
                Some(id) => repeated(id).await,
                None => Err(Status::aborted("idempotency_key is being used by a request that did not finish; retry")),
            },
        }
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
                let rows = self
                    .app
                    .platform
                    .store
                    .query(
                        "SELECT contract_id FROM contracts_contracts WHERE merchant_id = $1 AND merchant_contract_code = $2",
                        &[Value::from(merchant.to_string()), Value::from(code)],
                    )
                    .await
                    .map_err(store_error)?;
                let raw = rows
                    .first()
                    .and_then(|r| r.text(0))
                    .ok_or_else(|| Status::not_found(format!("no contract with merchant_contract_code {code:?}")))?;
                parse_contract_id(raw)?
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
        let rows = self
            .app
            .platform
            .store
            .query(
                "SELECT contract_id FROM contracts_contracts
                 WHERE merchant_id = $1 AND contract_id > $2
                   AND ($3 = '' OR state = $3) AND ($4 = '' OR payer_id = $4) AND ($5 = '' OR plan_id = $5)
                 ORDER BY contract_id LIMIT $6",
                &[
                    Value::from(merchant.to_string()),
                    Value::from(r.page_token.as_str()),
                    Value::from(state),
                    Value::from(r.payer_id.as_str()),
                    Value::from(r.plan_id.as_str()),
                    Value::Int(limit + 1),
                ],
            )
            .await
            .map_err(store_error)?;
        let mut contracts = Vec::new();
        for row in rows.iter().take(limit as usize) {
            let id = parse_contract_id(row.text(0).unwrap_or_default())?;
            let (c, v) = self.app.get(id).await.map_err(to_status)?;
            contracts.push(to_pb(&c, v));
        }
        let next_page_token =
            crate::store::next_page_token(rows.len(), limit, contracts.last().map(|c| c.contract_id.as_str()));
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
        let platform = self.app.platform.clone();
        let now = platform.clock.now();
        // The plan's cap and modification rule, when the contract has a plan.
        let (plan, tz) = {
            let principal = caller(&req)?;
            let id = parse_contract_id(&r.contract_id)?;
            let (c, _) = self.visible(&principal, id).await?;
            let plan = match c.plan_id.as_str() {
                "" => None,
                p => crate::plans::load(&platform, p).await?.map(|(_, plan)| plan),
            };
            (plan, merchant_zone(&platform, &c.merchant_id).await?)
        };
        let contract = self
            .act(&req, &r.contract_id, r.expected_version, |c| {
                let cycle = new_cycle.unwrap_or(c.cycle);
                let cap = plan
                    .as_ref()
                    .map(|p| p.per_charge_cap)
                    .unwrap_or(Money::new(MAX_CHARGE_CNY_FEN, amount.currency()));
                let rule = plan.as_ref().map(|p| p.modification_rule).unwrap_or(ModificationRule::NextCycle);
                let calendar = modification::calendar(&c.cycle_history, now, &tz).unwrap_or(Calendar {
                    cycle: c.cycle,
                    anchor: c.signed_at,
                    anchor_period: 0,
                });
                let effective_at = modification::effective_at(rule, &calendar, now, &tz);
                let notice =
                    modification::notice(rule, effective_at, (amount, cycle), (c.amount_per_cycle, c.cycle), &tz);
                Ok(ContractCommand::Modify { amount_per_cycle: amount, cycle, cap, effective_at, notice })
            })
            .await?;
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
            autodebit_domain::signing::SigningCommand::Approve
        } else {
            if r.reason.trim().is_empty() {
                return Err(invalid("reason", "a rejection needs a reason"));
            }
            autodebit_domain::signing::SigningCommand::Reject { reason: r.reason }
        };
        let l = self.signing.step(&r.session_id, command, &cause).await?;
        Ok(Response::new(pb::ReviewSigningSessionResponse {
            session: Some(crate::signing::to_api(&l, &self.signing.public_url)),
        }))
    }
}

impl ContractsApi {
    async fn visible_session(&self, principal: &Principal, id: &str) -> Result<crate::signing::Loaded, Status> {
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
        require_approved(&self.app.platform, &merchant).await?;
        let cause = request_cause(&req);
        let r = req.into_inner();
        if r.plan_id.is_empty() {
            return Err(invalid("plan_id", "is required"));
        }
        let (_, plan) = crate::plans::load(&self.app.platform, &r.plan_id)
            .await?
            .ok_or_else(|| invalid("plan_id", format!("plan {} not found", r.plan_id)))?;
        if plan.merchant_id != merchant {
            return Err(invalid("plan_id", format!("plan {} not found", r.plan_id)));
        }
        let signs_at_wechatpay =
            plan.provider == "wechatpay" && self.signing.wechatpay.of_merchant(merchant.as_str()).is_some();
        if plan.provider != "simulator" && !signs_at_wechatpay {
            return Err(Status::failed_precondition(format!(
                "plans on the {} provider sign through the provider's own entry, and this merchant has no {} account \
                 configured (--wechatpay-config)",
                plan.provider, plan.provider
            )));
        }
        let payer = PayerId::parse(&r.payer_id).map_err(|e| invalid("payer_id", e))?;
        let channel = match autodebit_proto::events::v1::SigningChannel::try_from(r.channel) {
            Ok(autodebit_proto::events::v1::SigningChannel::Unspecified) | Err(_) => {
                return Err(invalid("channel", "must be SIGNING_CHANNEL_H5, _MINI_PROGRAM or _APP"));
            }
            Ok(c) => c,
        };
        if r.device_id.is_empty() || r.device_id.len() > 128 {
            return Err(invalid("device_id", "must be 1 to 128 characters"));
        }
        let client_ip = crate::signing::parse_ip(&r.client_ip)?;
        if !(r.return_url.starts_with("https://") || r.return_url.starts_with("http://")) || r.return_url.len() > 1024 {
            return Err(invalid("return_url", "must be an http(s) URL of at most 1024 characters"));
        }
        let language = match r.language.as_str() {
            "" | "zh" => "zh",
            "en" => "en",
            _ => return Err(invalid("language", "must be \"zh\" or \"en\"")),
        };
        if r.merchant_contract_code.len() > 32 {
            return Err(invalid("merchant_contract_code", "is longer than 32 characters"));
        }
        if r.idempotency_key.len() > MAX_KEY_LEN {
            return Err(invalid("idempotency_key", format!("is longer than {MAX_KEY_LEN} characters")));
        }
        if !r.merchant_contract_code.is_empty() {
            let taken = self
                .app
                .platform
                .store
                .query(
                    "SELECT 1 FROM contracts_contracts WHERE merchant_id = $1 AND merchant_contract_code = $2",
                    &[Value::from(merchant.to_string()), Value::from(&r.merchant_contract_code)],
                )
                .await
                .map_err(store_error)?;
            if !taken.is_empty() {
                return Err(Status::already_exists(format!(
                    "merchant_contract_code {:?} is already used by another contract of this merchant",
                    r.merchant_contract_code
                )));
            }
        }
        let open = crate::signing::OpenRequest {
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
        };
        let l = self.signing.open(open, &cause).await?;
        self.session_to_api(&l).await
    }

    /// A session as the API shows it, with WeChat Pay's signing entry where it signs there.
    async fn session_to_api(&self, l: &crate::signing::Loaded) -> Result<pb::SigningSession, Status> {
        let mut s = crate::signing::to_api(l, &self.signing.public_url);
        if s.state == pb::SigningState::Open as i32 {
            s.provider_signing_url = crate::wechatpay::signing_url(&self.signing, l).await?;
        }
        Ok(s)
    }
}
