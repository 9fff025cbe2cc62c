//! Plans in the log: `PlanCreated` carries the terms with their defaults made explicit, the
//! same bytes the contracts service's plan table keeps.
use super::{cycle_from_pb, cycle_to_pb, from_millis, money_from_pb, money_to_pb, usage_from_pb, usage_to_pb};
use crate::repository::Stored;
use autodebit_domain::MerchantId;
use autodebit_domain::plan::{self, AmountType, ChargeMode, ModificationRule, Plan, PlanEvent};
use autodebit_domain::terms::Terms;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

/// A field of `PlanTerms` that does not convert, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TermsError {
    /// The field's path within `PlanTerms`, e.g. `per_charge_cap`.
    pub field: String,
    pub problem: String,
}

fn terms_error(field: impl Into<String>, problem: impl Into<String>) -> TermsError {
    TermsError { field: field.into(), problem: problem.into() }
}

/// The terms of a contract: its plan's, with the contract's own amount and cycle (an imported
/// or modified contract may differ from its plan's); a contract of no known plan is a fixed
/// cycle of its amount. The authorization page, the notices and the payer's page word them
/// alike (`Terms::lines`).
pub fn contract_terms(
    amount: autodebit_domain::Money,
    cycle: Option<autodebit_domain::Cycle>,
    plan: Option<&pb::PlanTerms>,
) -> Terms {
    let fixed = Terms {
        service_name: String::new(),
        charge_mode: ChargeMode::FixedCycle,
        cycle,
        amount_type: AmountType::Fixed,
        amount,
        per_charge_cap: amount,
        first_charge_at_signing: false,
        usage: None,
    };
    let Some(p) = plan else { return fixed };
    let charge_mode = match pb::ChargeMode::try_from(p.charge_mode) {
        Ok(pb::ChargeMode::Usage) => ChargeMode::Usage,
        Ok(pb::ChargeMode::EventTriggered) => ChargeMode::EventTriggered,
        Ok(pb::ChargeMode::Hybrid) => ChargeMode::Hybrid,
        _ => ChargeMode::FixedCycle,
    };
    let plan_cycle = cycle_from_pb(p.cycle);
    Terms {
        service_name: p.service_name.clone(),
        charge_mode,
        cycle: if charge_mode == ChargeMode::FixedCycle || charge_mode == ChargeMode::Hybrid {
            cycle
        } else {
            plan_cycle
        },
        amount_type: if p.amount_type == pb::AmountType::Fixed as i32 {
            AmountType::Fixed
        } else {
            AmountType::UpToCap
        },
        per_charge_cap: money_from_pb(p.per_charge_cap.as_ref()).unwrap_or(amount),
        first_charge_at_signing: p.first_charge_at_signing,
        usage: p.usage.as_ref().and_then(|u| {
            usage_from_pb(u, pb::ChargeMode::try_from(p.charge_mode).unwrap_or_default(), plan_cycle).ok()
        }),
        ..fixed
    }
}

/// The domain plan `terms` describe, defaults filled in. Converts only: the plan's rules
/// (`Plan::validate`) are the aggregate's to check.
pub fn plan_from_terms(plan_id: &str, merchant: &MerchantId, t: &pb::PlanTerms) -> Result<Plan, TermsError> {
    let charge_mode = match pb::ChargeMode::try_from(t.charge_mode) {
        Ok(pb::ChargeMode::FixedCycle) => ChargeMode::FixedCycle,
        Ok(pb::ChargeMode::Usage) => ChargeMode::Usage,
        Ok(pb::ChargeMode::EventTriggered) => ChargeMode::EventTriggered,
        Ok(pb::ChargeMode::Hybrid) => ChargeMode::Hybrid,
        _ => return Err(terms_error("charge_mode", "must be a CHARGE_MODE_… value")),
    };
    let cycle = match t.cycle {
        0 => None,
        raw => Some(cycle_from_pb(raw).ok_or_else(|| terms_error("cycle", "must be a CYCLE_… value"))?),
    };
    let amount_type = match pb::AmountType::try_from(t.amount_type) {
        Ok(pb::AmountType::Fixed) => AmountType::Fixed,
        Ok(pb::AmountType::UpToCap) => AmountType::UpToCap,
        _ => return Err(terms_error("amount_type", "must be AMOUNT_TYPE_FIXED or AMOUNT_TYPE_UP_TO_CAP")),
    };
    let money = |field: &'static str, m: Option<&pb::Money>| money_from_pb(m).map_err(|e| terms_error(field, e));
    let per_charge_cap = money("per_charge_cap", t.per_charge_cap.as_ref())?;
    let amount = match (amount_type, t.amount.as_ref()) {
        (AmountType::UpToCap, None) => per_charge_cap,
        (_, m) => money("amount", m)?,
    };
    let daily_amount_limit = match t.daily_amount_limit.as_ref() {
        None => None,
        Some(m) => Some(money("daily_amount_limit", Some(m))?),
    };
    let modification_rule = match pb::ModificationRule::try_from(t.modification_rule) {
        Ok(pb::ModificationRule::Unspecified) | Ok(pb::ModificationRule::NextCycle) => ModificationRule::NextCycle,
        Ok(pb::ModificationRule::Immediately) => ModificationRule::Immediately,
        Err(_) => return Err(terms_error("modification_rule", "must be a MODIFICATION_RULE_… value")),
    };
    let usage = match &t.usage {
        None => None,
        Some(u) => Some(
            usage_from_pb(u, pb::ChargeMode::try_from(t.charge_mode).unwrap_or_default(), cycle)
                .map_err(|f| terms_error(f, "must be a CYCLE_… value"))?,
        ),
    };
    Ok(Plan {
        plan_id: plan_id.to_string(),
        merchant_id: merchant.clone(),
        service_name: t.service_name.clone(),
        charge_mode,
        cycle,
        amount_type,
        amount,
        per_charge_cap,
        daily_count_limit: plan::daily_count_limit(t.daily_count_limit),
        daily_amount_limit,
        service_period_days: t.service_period_days,
        validity_days: t.validity_days,
        notice_lead_hours: plan::notice_lead_hours(t.notice_lead_hours),
        retry_gaps_hours: t.retry_schedule_hours.clone(),
        provider: plan::provider(&t.provider).to_string(),
        first_charge_at_signing: t.first_charge_at_signing,
        modification_rule,
        usage,
    })
}

/// The terms as stored: defaults made explicit.
pub fn plan_terms_to_pb(p: &Plan) -> pb::PlanTerms {
    pb::PlanTerms {
        service_name: p.service_name.clone(),
        charge_mode: match p.charge_mode {
            ChargeMode::FixedCycle => pb::ChargeMode::FixedCycle,
            ChargeMode::Usage => pb::ChargeMode::Usage,
            ChargeMode::EventTriggered => pb::ChargeMode::EventTriggered,
            ChargeMode::Hybrid => pb::ChargeMode::Hybrid,
        } as i32,
        cycle: p.cycle.map(|c| cycle_to_pb(c) as i32).unwrap_or(0),
        amount_type: match p.amount_type {
            AmountType::Fixed => pb::AmountType::Fixed,
            AmountType::UpToCap => pb::AmountType::UpToCap,
        } as i32,
        amount: Some(money_to_pb(p.amount)),
        per_charge_cap: Some(money_to_pb(p.per_charge_cap)),
        daily_count_limit: p.daily_count_limit,
        daily_amount_limit: p.daily_amount_limit.map(money_to_pb),
        service_period_days: p.service_period_days,
        validity_days: p.validity_days,
        notice_lead_hours: p.notice_lead_hours,
        retry_schedule_hours: p.retry_gaps_hours.clone(),
        provider: p.provider.clone(),
        first_charge_at_signing: p.first_charge_at_signing,
        modification_rule: match p.modification_rule {
            ModificationRule::Immediately => pb::ModificationRule::Immediately,
            ModificationRule::NextCycle => pb::ModificationRule::NextCycle,
        } as i32,
        usage: p.usage.as_ref().map(usage_to_pb),
    }
}

impl Stored for Plan {
    fn to_pb(_: &Option<Plan>, event: &PlanEvent) -> Option<pb::Event> {
        let PlanEvent::Created { plan, at } = event;
        Some(pb::Event {
            kind: Some(EventKind::PlanCreated(pb::PlanCreated {
                plan_id: plan.plan_id.clone(),
                merchant_id: plan.merchant_id.to_string(),
                terms: Some(plan_terms_to_pb(plan)),
                created_at_ms: at.timestamp_millis(),
            })),
        })
    }

    fn from_pb(kind: &EventKind) -> Option<PlanEvent> {
        let EventKind::PlanCreated(c) = kind else { return None };
        let merchant = MerchantId::parse(&c.merchant_id).ok()?;
        let plan = plan_from_terms(&c.plan_id, &merchant, c.terms.as_ref()?).ok()?;
        Some(PlanEvent::Created { plan, at: from_millis(c.created_at_ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::{Cycle, Money};

    #[test]
    fn stored_terms_convert_back_to_the_same_plan() {
        let plan = Plan {
            plan_id: "pl_1".into(),
            merchant_id: MerchantId::parse("mch_1").unwrap(),
            service_name: "会员".into(),
            charge_mode: ChargeMode::FixedCycle,
            cycle: Some(Cycle::Monthly),
            amount_type: AmountType::Fixed,
            amount: Money::cny(1_990),
            per_charge_cap: Money::cny(1_990),
            daily_count_limit: plan::DEFAULT_DAILY_COUNT_LIMIT,
            daily_amount_limit: None,
            service_period_days: 365,
            validity_days: 395,
            notice_lead_hours: plan::DEFAULT_NOTICE_LEAD_HOURS,
            retry_gaps_hours: vec![6, 24],
            provider: plan::DEFAULT_PROVIDER.into(),
            first_charge_at_signing: false,
            modification_rule: ModificationRule::NextCycle,
            usage: None,
        };
        let event = PlanEvent::Created { plan: plan.clone(), at: from_millis(5) };
        let logged = Plan::to_pb(&None, &event).unwrap();
        assert_eq!(Plan::from_pb(logged.kind.as_ref().unwrap()), Some(event));
        // Terms that leave the defaults out get them.
        let mut terms = plan_terms_to_pb(&plan);
        terms.daily_count_limit = 0;
        terms.provider.clear();
        terms.notice_lead_hours = 0;
        assert_eq!(plan_from_terms("pl_1", &plan.merchant_id, &terms), Ok(plan));
    }
}
