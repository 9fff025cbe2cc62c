//! `RiskService`: held charges and their review.
use crate::holds::{Decision, HoldError, Holds, MAX_PAGE};
use crate::store::holds::{self, HoldRow};
use autodebit_domain::{ChargeId, ContractId, Currency, Money};
use autodebit_proto::scheduler::v1::{self as pb, risk_service_server::RiskService};
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid, store_error};
use tonic::{Request, Response, Status};

pub struct RiskApi {
    holds: Holds,
}

impl RiskApi {
    pub fn new(holds: Holds) -> Self {
        RiskApi { holds }
    }
}

pub fn status_of(e: HoldError) -> Status {
    match e {
        HoldError::NotFound(m) => Status::not_found(m),
        HoldError::NotHeld(m) => Status::failed_precondition(m),
        HoldError::Invalid { field, problem } => invalid(field, problem),
        HoldError::Store(e) => store_error(e),
        HoldError::Internal(e) => internal(format!("{e:#}")),
    }
}

fn state_to_pb(s: &str) -> pb::HoldState {
    match s {
        holds::HELD => pb::HoldState::Held,
        holds::RELEASED => pb::HoldState::Released,
        holds::SCHEDULED => pb::HoldState::Scheduled,
        holds::REJECTED => pb::HoldState::Rejected,
        _ => pb::HoldState::Unspecified,
    }
}

fn state_from_pb(s: pb::HoldState) -> Option<&'static str> {
    match s {
        pb::HoldState::Unspecified => None,
        pb::HoldState::Held => Some(holds::HELD),
        pb::HoldState::Released => Some(holds::RELEASED),
        pb::HoldState::Scheduled => Some(holds::SCHEDULED),
        pb::HoldState::Rejected => Some(holds::REJECTED),
    }
}

pub fn held_to_pb(r: HoldRow) -> pb::HeldCharge {
    let amount = Currency::parse(&r.currency).ok().map(|c| codec::money_to_pb(Money::new(r.amount, c)));
    pb::HeldCharge {
        state: state_to_pb(&r.state) as i32,
        charge_id: r.charge_id,
        contract_id: r.contract_id,
        merchant_id: r.merchant_id,
        payer_id: r.payer_id,
        amount,
        rule: r.rule,
        detail: r.detail,
        mean_minor_units: r.mean,
        threshold_percent: u32::try_from(r.threshold_percent).unwrap_or(0),
        history_count: u32::try_from(r.history_count).unwrap_or(0),
        held_at_ms: r.held_at_ms,
        expires_at_ms: r.expires_at_ms,
        released_by: r.released_by,
        note: r.note,
        decided_at_ms: r.decided_at_ms,
        charge_at_ms: r.charge_at_ms,
    }
}

fn charge_of(id: &str) -> Result<ChargeId, Status> {
    ChargeId::parse(id).map_err(|e| invalid("charge_id", e))
}

#[tonic::async_trait]
impl RiskService for RiskApi {
    async fn list_held_charges(
        &self,
        req: Request<pb::ListHeldChargesRequest>,
    ) -> Result<Response<pb::ListHeldChargesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let state =
            pb::HoldState::try_from(r.state).map_err(|_| invalid("state", format!("{} is not a state", r.state)))?;
        if !r.contract_id.is_empty() {
            ContractId::parse(&r.contract_id).map_err(|e| invalid("contract_id", e))?;
        }
        if !r.merchant_id.is_empty() {
            autodebit_domain::MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        }
        if r.page_size > MAX_PAGE {
            return Err(invalid("page_size", format!("at most {MAX_PAGE}")));
        }
        let before = if r.page_token.is_empty() {
            None
        } else {
            let bad = || invalid("page_token", "is not a token this call returned");
            let (at, id) = r.page_token.split_once(':').ok_or_else(bad)?;
            charge_of(id).map_err(|_| bad())?;
            Some((at.parse::<i64>().map_err(|_| bad())?, id.to_string()))
        };
        let filter = holds::Filter {
            merchant_id: (!r.merchant_id.is_empty()).then_some(r.merchant_id.as_str()),
            contract_id: (!r.contract_id.is_empty()).then_some(r.contract_id.as_str()),
            state: state_from_pb(state),
            before,
            limit: i64::from(if r.page_size == 0 { 100 } else { r.page_size }),
        };
        let (rows, next) = self.holds.list(&who, filter).await.map_err(status_of)?;
        Ok(Response::new(pb::ListHeldChargesResponse {
            held_charges: rows.into_iter().map(held_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn review_held_charge(
        &self,
        req: Request<pb::ReviewHeldChargeRequest>,
    ) -> Result<Response<pb::ReviewHeldChargeResponse>, Status> {
        caller(&req)?;
        let r = req.get_ref();
        let charge_id = charge_of(&r.charge_id)?;
        let decision = match pb::HoldDecision::try_from(r.decision) {
            Ok(pb::HoldDecision::Approve) => Decision::Approve,
            Ok(pb::HoldDecision::Reject) => Decision::Reject,
            _ => return Err(invalid("decision", "must be HOLD_DECISION_APPROVE or HOLD_DECISION_REJECT")),
        };
        let note = r.note.trim();
        if note.chars().count() > 500 {
            return Err(invalid("note", "at most 500 characters"));
        }
        let row = self.holds.review(charge_id, decision, note).await.map_err(status_of)?;
        Ok(Response::new(pb::ReviewHeldChargeResponse { held_charge: Some(held_to_pb(row)) }))
    }
}
