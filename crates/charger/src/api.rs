//! gRPC handlers of the charger.
use crate::refunds::{self, RequestError};
use autodebit_domain::charge::{Charge, ChargeError, ChargeStatus, Refund, RefundStatus};
use autodebit_domain::{ChargeId, Money};
use autodebit_proto::charger::v1::{self as pb, charger_service_server::ChargerService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid};
use tonic::{Request, Response, Status};

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

fn sum(c: &Charge, status: RefundStatus) -> Money {
    let fen = c.refunds.iter().filter(|r| r.status == status).map(|r| r.amount.minor_units()).sum();
    Money::new(fen, c.amount.currency())
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
        } as i32,
        provider_transaction_id: c.provider_transaction_id.clone().unwrap_or_default(),
        provider_code: c.code.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
        version,
        attempt: c.attempt,
        refunded: Some(codec::money_to_pb(sum(c, RefundStatus::Succeeded))),
        refund_pending: Some(codec::money_to_pb(sum(c, RefundStatus::Requested))),
        refunds: c.refunds.iter().map(|r| refund_to_pb(c, r)).collect(),
    }
}

impl ChargerApi {
    /// The charge, if the caller may see it (another merchant's is as good as missing).
    async fn visible<T>(&self, req: &Request<T>, id: ChargeId) -> Result<(Charge, u64), Status> {
        let who = caller(req)?;
        let (state, version) = refunds::load(&self.platform.store, id).await.map_err(|e| internal(format!("{e:#}")))?;
        state
            .filter(|c| who.may_see(&c.merchant_id))
            .map(|c| (c, version))
            .ok_or_else(|| Status::not_found(format!("charge_id: {id} not found")))
    }
}

#[tonic::async_trait]
impl ChargerService for ChargerApi {
    async fn get_charge(&self, req: Request<pb::GetChargeRequest>) -> Result<Response<pb::GetChargeResponse>, Status> {
        let id = ChargeId::parse(&req.get_ref().charge_id).map_err(|e| invalid("charge_id", e))?;
        let (c, version) = self.visible(&req, id).await?;
        Ok(Response::new(pb::GetChargeResponse { charge: Some(charge_to_pb(&c, version)) }))
    }

    async fn refund_charge(
        &self,
        req: Request<pb::RefundChargeRequest>,
    ) -> Result<Response<pb::RefundChargeResponse>, Status> {
        let id = ChargeId::parse(&req.get_ref().charge_id).map_err(|e| invalid("charge_id", e))?;
        let r = req.get_ref();
        let amount = codec::money_from_pb(r.amount.as_ref()).map_err(|e| invalid("amount", e))?;
        if r.idempotency_key.is_empty() || r.idempotency_key.len() > 128 {
            return Err(invalid("idempotency_key", "is required (at most 128 characters)"));
        }
        let (charge, _) = self.visible(&req, id).await?;
        let refund_id = refunds::refund_id(id, &r.idempotency_key);
        // The same key: the same refund, or a refusal if it asked for another amount.
        if let Some(earlier) = charge.refund(&refund_id) {
            if earlier.amount != amount {
                return Err(Status::already_exists(format!(
                    "idempotency_key: used for a refund of {} of this charge, not {amount}",
                    earlier.amount
                )));
            }
            return Ok(Response::new(pb::RefundChargeResponse {
                refund: Some(refund_to_pb(&charge, earlier)),
                duplicate: true,
            }));
        }
        let charge =
            refunds::request(&self.platform, id, &refund_id, amount, &r.reason).await.map_err(|e| match e {
                RequestError::Rule(ChargeError::NotRefundable(s)) => Status::failed_precondition(format!(
                    "charge_id: only a succeeded charge can be refunded; it is {s:?}"
                )),
                RequestError::Rule(e @ (ChargeError::RefundTooLarge { .. } | ChargeError::RefundAmount(_))) => {
                    invalid("amount", e)
                }
                RequestError::Rule(e) => Status::failed_precondition(e.to_string()),
                RequestError::Busy(_) => Status::aborted(e.to_string()),
                RequestError::Store(e) => internal(format!("{e:#}")),
            })?;
        let refund = charge.refund(&refund_id).map(|r| refund_to_pb(&charge, r));
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::REFUNDS_REQUESTED, &[], 1);
        Ok(Response::new(pb::RefundChargeResponse { refund, duplicate: false }))
    }

    async fn get_refund(&self, req: Request<pb::GetRefundRequest>) -> Result<Response<pb::GetRefundResponse>, Status> {
        let refund_id = req.get_ref().refund_id.clone();
        let id = refunds::charge_of(&refund_id).ok_or_else(|| invalid("refund_id", "is not a refund id"))?;
        let (charge, _) = self.visible(&req, id).await?;
        let refund = charge
            .refund(&refund_id)
            .map(|r| refund_to_pb(&charge, r))
            .ok_or_else(|| Status::not_found(format!("refund_id: {refund_id} not found")))?;
        Ok(Response::new(pb::GetRefundResponse { refund: Some(refund) }))
    }
}
