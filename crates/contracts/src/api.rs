//! gRPC handlers: parse the request into domain types, call the application, map the result.
use crate::app::{AppError, Contracts, SignRequest};
use autodebit_domain::contract::{Contract as DomainContract, ContractError, ContractState};
use autodebit_domain::{ContractId, MAX_CHARGE_CNY_FEN, MerchantId, Money, PayerId};
use autodebit_proto::contracts::v1::{self as pb, contracts_service_server::ContractsService};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct ContractsApi {
    app: Contracts,
}

impl ContractsApi {
    pub fn new(app: Contracts) -> Self {
        ContractsApi { app }
    }
}

const MAX_KEY_LEN: usize = 128;

fn to_status(e: AppError) -> Status {
    match e {
        AppError::NotFound(_) => Status::not_found(e.to_string()),
        AppError::VersionMismatch { .. } => Status::aborted(e.to_string()),
        AppError::IdempotencyMismatch => Status::already_exists(e.to_string()),
        AppError::Rule(ContractError::AboveCap { .. } | ContractError::NotPositive) => invalid("amount_per_cycle", &e),
        AppError::Rule(ContractError::AlreadySigned) => Status::already_exists(e.to_string()),
        AppError::Rule(ContractError::NotSigned) => Status::not_found(e.to_string()),
        AppError::Rule(ContractError::AlreadyTerminated) => Status::failed_precondition(e.to_string()),
        AppError::Store(e) => store_error(e),
    }
}

fn to_pb(c: &DomainContract, state: &ContractState, version: u64) -> pb::Contract {
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
        state: match state {
            ContractState::Unsigned => pb::ContractState::Unspecified,
            ContractState::Active(_) => pb::ContractState::Active,
            ContractState::Terminated(_) => pb::ContractState::Terminated,
        } as i32,
        signed_at_ms: c.signed_at.timestamp_millis(),
        terminated_at_ms: at,
        termination_mode: mode,
        termination_remark: remark,
        version,
        merchant_contract_code: c.merchant_contract_code.clone(),
    }
}

fn parse_contract_id(raw: &str) -> Result<ContractId, Status> {
    ContractId::parse(raw).map_err(|e| invalid("contract_id", e))
}

fn parse_sign(r: pb::SignContractRequest) -> Result<SignRequest, Status> {
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
                "{} is above the per-charge cap of {MAX_CHARGE_CNY_FEN} minor units (50,000 CNY)",
                amount.minor_units()
            ),
        ));
    }
    let cycle = codec::cycle_from_pb(r.cycle).ok_or_else(|| {
        invalid("cycle", "must be one of CYCLE_DAILY, CYCLE_WEEKLY, CYCLE_MONTHLY, CYCLE_QUARTERLY, CYCLE_YEARLY")
    })?;
    if r.merchant_contract_code.len() > 32 {
        return Err(invalid("merchant_contract_code", "is longer than 32 characters"));
    }
    let idempotency_key = match r.idempotency_key.as_str() {
        "" => None,
        k if k.len() > MAX_KEY_LEN => {
            return Err(invalid("idempotency_key", format!("is longer than {MAX_KEY_LEN} characters")));
        }
        k => Some(k.to_string()),
    };
    Ok(SignRequest {
        merchant_id,
        payer_id,
        amount_per_cycle: amount,
        cycle,
        merchant_contract_code: r.merchant_contract_code,
        idempotency_key,
    })
}

fn request_cause<T>(req: &Request<T>) -> Cause {
    let id = req
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Cause::request(id)
}

#[tonic::async_trait]
impl ContractsService for ContractsApi {
    async fn sign_contract(
        &self,
        req: Request<pb::SignContractRequest>,
    ) -> Result<Response<pb::SignContractResponse>, Status> {
        let cause = request_cause(&req);
        let sign = parse_sign(req.into_inner())?;
        let (c, state, version) = self.app.sign(sign, &cause).await.map_err(to_status)?;
        Ok(Response::new(pb::SignContractResponse { contract: Some(to_pb(&c, &state, version)) }))
    }

    async fn get_contract(
        &self,
        req: Request<pb::GetContractRequest>,
    ) -> Result<Response<pb::GetContractResponse>, Status> {
        let id = parse_contract_id(&req.get_ref().contract_id)?;
        let (c, state, version) = self.app.get(id).await.map_err(to_status)?;
        Ok(Response::new(pb::GetContractResponse { contract: Some(to_pb(&c, &state, version)) }))
    }

    async fn terminate_contract(
        &self,
        req: Request<pb::TerminateContractRequest>,
    ) -> Result<Response<pb::TerminateContractResponse>, Status> {
        let cause = request_cause(&req);
        let r = req.into_inner();
        let id = parse_contract_id(&r.contract_id)?;
        let mode = codec::termination_mode_from_pb(r.mode).ok_or_else(|| {
            invalid("mode", "must be one of TERMINATION_MODE_PAYER, _MERCHANT, _CUSTOMER_SERVICE, _PROVIDER")
        })?;
        if r.remark.chars().count() > 256 {
            return Err(invalid("remark", "is longer than 256 characters"));
        }
        let (c, state, version) =
            self.app.terminate(id, mode, r.remark, r.expected_version, &cause).await.map_err(to_status)?;
        Ok(Response::new(pb::TerminateContractResponse { contract: Some(to_pb(&c, &state, version)) }))
    }
}
