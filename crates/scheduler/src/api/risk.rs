//! `RiskService`: held charges and their review.
use crate::holds::{Decision, HoldError, Holds, MAX_PAGE};
use crate::rules::{InForce, Rules};
use crate::store::decisions;
use crate::store::holds::{self, HoldRow};
use autodebit_domain::risk::Scope;
use autodebit_domain::{ChargeId, ContractId, Currency, Money};
use autodebit_proto::events::v1::{RiskInput, RiskScope};
use autodebit_proto::scheduler::v1::{self as pb, risk_service_server::RiskService};
use autodebit_runtime::auth::Principal;
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid, page_after, page_size, store_error};
use tonic::{Request, Response, Status};

pub struct RiskApi {
    holds: Holds,
    rules: Rules,
}

impl RiskApi {
    pub fn new(holds: Holds, rules: Rules) -> Self {
        RiskApi { holds, rules }
    }
}

fn rule_to_pb(r: InForce) -> pb::RiskRule {
    pb::RiskRule {
        setting: r.setting.name.to_string(),
        rule: r.setting.rule.to_string(),
        about: r.setting.about.to_string(),
        platform_value: r.setting.platform,
        strictest: r.setting.strictest,
        loosest: r.setting.loosest,
        value: r.value,
        source: r.source.unwrap_or(RiskScope::Unspecified) as i32,
    }
}

fn decision_to_pb(d: decisions::Decision) -> pb::RiskDecision {
    let inputs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&d.inputs).unwrap_or_default();
    pb::RiskDecision {
        decision_id: d.decision_id,
        at_ms: d.at_ms,
        merchant_id: d.merchant_id,
        payer_id: d.payer_id,
        contract_id: d.contract_id,
        session_id: d.session_id,
        charge_id: d.charge_id,
        rule: d.rule,
        inputs: inputs
            .into_iter()
            .map(|(name, v)| RiskInput { name, value: v.as_str().map_or_else(|| v.to_string(), str::to_string) })
            .collect(),
        outcome: d.outcome,
        detail: d.detail,
    }
}

fn optional<'a>(field: &'static str, v: &'a str, ok: impl Fn(&str) -> bool) -> Result<Option<&'a str>, Status> {
    if v.is_empty() {
        return Ok(None);
    }
    if !ok(v) || v.len() > 128 {
        return Err(invalid(field, format!("{v:?} is not an id")));
    }
    Ok(Some(v))
}

fn merchant_ok(v: &str) -> bool {
    autodebit_domain::MerchantId::parse(v).is_ok()
}

fn plan_ok(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
        optional("contract_id", &r.contract_id, |c| ContractId::parse(c).is_ok())?;
        optional("merchant_id", &r.merchant_id, merchant_ok)?;
        let filter = holds::Filter {
            merchant_id: (!r.merchant_id.is_empty()).then_some(r.merchant_id.as_str()),
            contract_id: (!r.contract_id.is_empty()).then_some(r.contract_id.as_str()),
            state: state_from_pb(state),
            before: page_after(&r.page_token, |id| ChargeId::parse(id).is_ok())?,
            limit: page_size(r.page_size, MAX_PAGE)?,
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

    async fn set_risk_rule(
        &self,
        req: Request<pb::SetRiskRuleRequest>,
    ) -> Result<Response<pb::SetRiskRuleResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = optional("merchant_id", &r.merchant_id, merchant_ok)?;
        let plan = optional("plan_id", &r.plan_id, plan_ok)?;
        let scope = match RiskScope::try_from(r.scope) {
            Ok(RiskScope::Platform) => Scope::Platform,
            Ok(RiskScope::Merchant) => match (merchant, &who) {
                (Some(m), _) => Scope::Merchant(m.to_string()),
                (None, Principal::Merchant(m)) => Scope::Merchant(m.to_string()),
                (None, Principal::Operator) => {
                    return Err(invalid("merchant_id", "is required for the merchant scope"));
                }
            },
            Ok(RiskScope::Plan) => {
                Scope::Plan(plan.ok_or_else(|| invalid("plan_id", "is required for the plan scope"))?.to_string())
            }
            _ => return Err(invalid("scope", "must be RISK_SCOPE_PLATFORM, RISK_SCOPE_MERCHANT or RISK_SCOPE_PLAN")),
        };
        let set = self.rules.set(&who, scope, r.setting.trim(), r.value).await.map_err(status_of)?;
        Ok(Response::new(pb::SetRiskRuleResponse { rule: Some(rule_to_pb(set)) }))
    }

    async fn list_risk_rules(
        &self,
        req: Request<pb::ListRiskRulesRequest>,
    ) -> Result<Response<pb::ListRiskRulesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = optional("merchant_id", &r.merchant_id, merchant_ok)?;
        let plan = optional("plan_id", &r.plan_id, plan_ok)?;
        let rules = self.rules.list(&who, merchant, plan).await.map_err(status_of)?;
        Ok(Response::new(pb::ListRiskRulesResponse { rules: rules.into_iter().map(rule_to_pb).collect() }))
    }

    async fn list_risk_decisions(
        &self,
        req: Request<pb::ListRiskDecisionsRequest>,
    ) -> Result<Response<pb::ListRiskDecisionsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        if r.since_ms < 0 || r.until_ms < 0 {
            return Err(invalid(if r.since_ms < 0 { "since_ms" } else { "until_ms" }, "must not be negative"));
        }
        let filter = decisions::Filter {
            merchant_id: optional("merchant_id", &r.merchant_id, merchant_ok)?,
            contract_id: optional("contract_id", &r.contract_id, |c| ContractId::parse(c).is_ok())?,
            payer_id: optional("payer_id", &r.payer_id, |p| autodebit_domain::PayerId::parse(p).is_ok())?,
            since_ms: (r.since_ms > 0).then_some(r.since_ms),
            until_ms: (r.until_ms > 0).then_some(r.until_ms),
            before: page_after(&r.page_token, |id| !id.is_empty())?,
            limit: page_size(r.page_size, MAX_PAGE)?,
        };
        let (rows, next) = self.rules.decisions(&who, filter).await.map_err(status_of)?;
        Ok(Response::new(pb::ListRiskDecisionsResponse {
            decisions: rows.into_iter().map(decision_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
