//! The charger's handlers: gRPC here, WeChat Pay's HTTP callbacks in `callbacks`. Each parses
//! its request, calls `app`, and maps the result to an answer.
use crate::app::{self, AppError};
use autodebit_domain::ChargeId;
use autodebit_domain::charge::{self, Charge, ChargeError, ChargeStatus, Refund, RefundStatus};
use autodebit_proto::charger::v1::{self as pb, charger_service_server::ChargerService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid};
use tonic::{Request, Response, Status};

pub mod callbacks;
pub mod complaints;
pub mod me;
pub mod reconciliation;
pub mod settlement;

/// The longest idempotency key a refund may be asked for with (bytes).
const MAX_IDEMPOTENCY_KEY: usize = 128;

pub struct ChargerApi {
    platform: Platform,
}

impl ChargerApi {
    pub fn new(platform: Platform) -> Self {
        ChargerApi { platform }
    }
}

fn refund_to_pb(charge: &Charge, r: &Refund) -> pb::Refund {
    pb::Refund {
        refund_id: r.refund_id.clone(),
        charge_id: charge.charge_id.to_string(),
        amount: Some(codec::money_to_pb(r.amount)),
        state: match r.status {
            RefundStatus::Requested => pb::RefundState::Requested,
            RefundStatus::Succeeded => pb::RefundState::Succeeded,
            RefundStatus::Failed => pb::RefundState::Failed,
        } as i32,
        reason: r.reason.clone(),
        provider_refund_id: r.provider_refund_id.clone().unwrap_or_default(),
        provider_code: r.code.clone().unwrap_or_default(),
        message: r.message.clone().unwrap_or_default(),
    }
}

fn charge_to_pb(c: &Charge, version: u64) -> pb::Charge {
    pb::Charge {
        charge_id: c.charge_id.to_string(),
        contract_id: c.contract_id.to_string(),
        merchant_id: c.merchant_id.to_string(),
        amount: Some(codec::money_to_pb(c.amount)),
        period: c.period,
        state: match c.status {
            ChargeStatus::Scheduled => pb::ChargeState::Scheduled,
            ChargeStatus::Succeeded => pb::ChargeState::Succeeded,
            ChargeStatus::Failed => pb::ChargeState::Failed,
            ChargeStatus::Rejected => pb::ChargeState::Rejected,
            ChargeStatus::Held => pb::ChargeState::Held,
        } as i32,
        provider_transaction_id: c.provider_transaction_id.clone().unwrap_or_default(),
        provider_code: c.code.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
        version,
        attempt: c.attempt,
        refunded: Some(codec::money_to_pb(c.refunds_in(RefundStatus::Succeeded))),
        refund_pending: Some(codec::money_to_pb(c.refunds_in(RefundStatus::Requested))),
        refunds: c.refunds.iter().map(|r| refund_to_pb(c, r)).collect(),
        hold_rule: c.hold.as_ref().map(|h| h.reason.rule.clone()).unwrap_or_default(),
        hold_expires_at_ms: c.hold.as_ref().map_or(0, |h| h.expires_at.timestamp_millis()),
        hold_released_by: c.hold.as_ref().and_then(|h| h.released).map(|r| r.as_str().to_string()).unwrap_or_default(),
    }
}

/// The answer to a use case that did not happen.
fn status(e: AppError) -> Status {
    match e {
        AppError::NotFound(_) => Status::not_found(e.to_string()),
        AppError::Rule(ChargeError::NotRefundable(s)) => {
            Status::failed_precondition(format!("charge_id: only a succeeded charge can be refunded; it is {s:?}"))
        }
        AppError::Rule(e @ (ChargeError::RefundTooLarge { .. } | ChargeError::RefundAmount(_))) => invalid("amount", e),
        AppError::Rule(e @ ChargeError::RefundKeyReused { .. }) => {
            Status::already_exists(format!("idempotency_key: {e}"))
        }
        AppError::Rule(e) => Status::failed_precondition(e.to_string()),
        AppError::Busy(_) => Status::aborted(e.to_string()),
        AppError::Store(e) => internal(format!("{:#}", anyhow::Error::from(e))),
        AppError::Version(e) => internal(e),
    }
}

#[tonic::async_trait]
impl ChargerService for ChargerApi {
    async fn get_charge(&self, req: Request<pb::GetChargeRequest>) -> Result<Response<pb::GetChargeResponse>, Status> {
        let id = ChargeId::parse(&req.get_ref().charge_id).map_err(|e| invalid("charge_id", e))?;
        let (c, version) = app::charge_for(&self.platform, &caller(&req)?, id).await.map_err(status)?;
        Ok(Response::new(pb::GetChargeResponse { charge: Some(charge_to_pb(&c, version)) }))
    }

    async fn refund_charge(
        &self,
        req: Request<pb::RefundChargeRequest>,
    ) -> Result<Response<pb::RefundChargeResponse>, Status> {
        let id = ChargeId::parse(&req.get_ref().charge_id).map_err(|e| invalid("charge_id", e))?;
        let r = req.get_ref();
        let amount = codec::money_from_pb(r.amount.as_ref()).map_err(|e| invalid("amount", e))?;
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(invalid("idempotency_key", "is required (at most 128 characters)"));
        }
        let who = caller(&req)?;
        let done =
            app::refund(&self.platform, &who, id, &r.idempotency_key, amount, &r.reason).await.map_err(status)?;
        let refund = done.charge.refund(&done.refund_id).map(|r| refund_to_pb(&done.charge, r));
        if !done.duplicate {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::REFUNDS_REQUESTED, &[], 1);
        }
        Ok(Response::new(pb::RefundChargeResponse { refund, duplicate: done.duplicate }))
    }

    async fn get_refund(&self, req: Request<pb::GetRefundRequest>) -> Result<Response<pb::GetRefundResponse>, Status> {
        let refund_id = req.get_ref().refund_id.clone();
        let id = charge::refunded_charge(&refund_id).ok_or_else(|| invalid("refund_id", "is not a refund id"))?;
        let (charge, _) = app::charge_for(&self.platform, &caller(&req)?, id).await.map_err(status)?;
        let refund = charge
            .refund(&refund_id)
            .map(|r| refund_to_pb(&charge, r))
            .ok_or_else(|| Status::not_found(format!("refund_id: {refund_id} not found")))?;
        Ok(Response::new(pb::GetRefundResponse { refund: Some(refund) }))
    }
}
