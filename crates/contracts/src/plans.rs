//! Deduction plans: a merchant's templates for the contracts its payers sign.
use autodebit_domain::plan::{AmountType, ChargeMode, ModificationRule, Plan};
use autodebit_domain::{Currency, MerchantId, Money};
use autodebit_eventstore::{ExpectedVersion, Value};
use autodebit_proto::EventKind;
use autodebit_proto::contracts::v1::{self as api, plans_service_server::PlansService};
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid, store_error};
use prost::Message;
use tonic::{Request, Response, Status};

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7b42_9e01_c3d5_4a6f_8b21_f0e4_5d97_3c6a);

fn plan_id(merchant: &MerchantId, idempotency_key: &str) -> String {
    let id = if idempotency_key.is_empty() {
        uuid::Uuid::now_v7()
    } else {
        uuid::Uuid::new_v5(&NAMESPACE, format!("{merchant}\0{idempotency_key}").as_bytes())
    };
    format!("pl_{}", id.simple())
}

/// The domain plan for `terms`, defaults filled in; the error names the field.
pub fn plan_from_terms(plan_id: &str, merchant: &MerchantId, t: &pb::PlanTerms) -> Result<Plan, Status> {
    let charge_mode = match pb::ChargeMode::try_from(t.charge_mode) {
        Ok(pb::ChargeMode::FixedCycle) => ChargeMode::FixedCycle,
        Ok(pb::ChargeMode::Usage) => ChargeMode::Usage,
        Ok(pb::ChargeMode::EventTriggered) => ChargeMode::EventTriggered,
        Ok(pb::ChargeMode::Hybrid) => ChargeMode::Hybrid,
        _ => return Err(invalid("terms.charge_mode", "must be a CHARGE_MODE_… value")),
    };
    let cycle = match t.cycle {
        0 => None,
        raw => Some(codec::cycle_from_pb(raw).ok_or_else(|| invalid("terms.cycle", "must be a CYCLE_… value"))?),
    };
    let amount_type = match pb::AmountType::try_from(t.amount_type) {
        Ok(pb::AmountType::Fixed) => AmountType::Fixed,
        Ok(pb::AmountType::UpToCap) => AmountType::UpToCap,
        _ => return Err(invalid("terms.amount_type", "must be AMOUNT_TYPE_FIXED or AMOUNT_TYPE_UP_TO_CAP")),
    };
    let money = |field: &'static str, m: Option<&pb::Money>| codec::money_from_pb(m).map_err(|e| invalid(field, e));
    let per_charge_cap: Money = money("terms.per_charge_cap", t.per_charge_cap.as_ref())?;
    let amount = match (amount_type, t.amount.as_ref()) {
        (AmountType::UpToCap, None) => per_charge_cap,
        (_, m) => money("terms.amount", m)?,
    };
    let daily_amount_limit = match t.daily_amount_limit.as_ref() {
        None => None,
        Some(m) => Some(money("terms.daily_amount_limit", Some(m))?),
    };
    let modification_rule = match pb::ModificationRule::try_from(t.modification_rule) {
        Ok(pb::ModificationRule::Unspecified) | Ok(pb::ModificationRule::NextCycle) => ModificationRule::NextCycle,
        Ok(pb::ModificationRule::Immediately) => ModificationRule::Immediately,
        Err(_) => return Err(invalid("terms.modification_rule", "must be a MODIFICATION_RULE_… value")),
    };
    let usage = match &t.usage {
        None => None,
        Some(u) => Some(
            codec::usage_from_pb(u, pb::ChargeMode::try_from(t.charge_mode).unwrap_or_default(), cycle)
                .map_err(|f| invalid(&format!("terms.{f}"), "must be a CYCLE_… value"))?,
        ),
    };
    let plan = Plan {
        plan_id: plan_id.to_string(),
        merchant_id: merchant.clone(),
        service_name: t.service_name.clone(),
        charge_mode,
        cycle,
        amount_type,
        amount,
        per_charge_cap,
        daily_count_limit: if t.daily_count_limit == 0 { 10 } else { t.daily_count_limit },
        daily_amount_limit,
        service_period_days: t.service_period_days,
        validity_days: t.validity_days,
        notice_lead_hours: autodebit_domain::plan::notice_lead_hours(t.notice_lead_hours),
        retry_gaps_hours: t.retry_schedule_hours.clone(),
        provider: if t.provider.is_empty() { "simulator".into() } else { t.provider.clone() },
        first_charge_at_signing: t.first_charge_at_signing,
        modification_rule,
        usage,
    };
    plan.validate().map_err(|e| invalid(&format!("terms.{}", e.field), e.problem))?;
    Ok(plan)
}

/// The terms as stored: defaults made explicit.
fn terms_of(p: &Plan) -> pb::PlanTerms {
    pb::PlanTerms {
        service_name: p.service_name.clone(),
        charge_mode: match p.charge_mode {
            ChargeMode::FixedCycle => pb::ChargeMode::FixedCycle,
            ChargeMode::Usage => pb::ChargeMode::Usage,
            ChargeMode::EventTriggered => pb::ChargeMode::EventTriggered,
            ChargeMode::Hybrid => pb::ChargeMode::Hybrid,
        } as i32,
        cycle: p.cycle.map(|c| codec::cycle_to_pb(c) as i32).unwrap_or(0),
        amount_type: match p.amount_type {
            AmountType::Fixed => pb::AmountType::Fixed,
            AmountType::UpToCap => pb::AmountType::UpToCap,
        } as i32,
        amount: Some(codec::money_to_pb(p.amount)),
        per_charge_cap: Some(codec::money_to_pb(p.per_charge_cap)),
        daily_count_limit: p.daily_count_limit,
        daily_amount_limit: p.daily_amount_limit.map(codec::money_to_pb),
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
        usage: p.usage.as_ref().map(codec::usage_to_pb),
    }
}

/// Reads a plan; `None` when it does not exist.
pub async fn load(platform: &Platform, plan_id: &str) -> Result<Option<(api::Plan, Plan)>, Status> {
    let rows = platform
        .store
        .query(
            "SELECT merchant_id, terms, created_at_ms FROM contracts_plans WHERE plan_id = $1",
            &[Value::from(plan_id)],
        )
        .await
        .map_err(store_error)?;
    let Some(row) = rows.first() else { return Ok(None) };
    let merchant = MerchantId::parse(row.text(0).unwrap_or_default()).map_err(internal)?;
    let terms = pb::PlanTerms::decode(row.bytes(1).unwrap_or_default()).map_err(internal)?;
    let plan = plan_from_terms(plan_id, &merchant, &terms)?;
    let api_plan = api::Plan {
        plan_id: plan_id.to_string(),
        merchant_id: merchant.to_string(),
        terms: Some(terms),
        created_at_ms: row.i64(2).unwrap_or(0),
    };
    Ok(Some((api_plan, plan)))
}

pub struct PlansApi {
    platform: Platform,
}

impl PlansApi {
    pub fn new(platform: Platform) -> Self {
        PlansApi { platform }
    }
}

#[tonic::async_trait]
impl PlansService for PlansApi {
    async fn create_plan(
        &self,
        req: Request<api::CreatePlanRequest>,
    ) -> Result<Response<api::CreatePlanResponse>, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        crate::api::require_approved(&self.platform, &merchant).await?;
        let cause = crate::api::request_cause(&req);
        let r = req.into_inner();
        let terms = r.terms.ok_or_else(|| invalid("terms", "is required"))?;
        let id = plan_id(&merchant, &r.idempotency_key);
        let plan = plan_from_terms(&id, &merchant, &terms)?;
        // Papay charges CNY only; every amount of a plan is in the per-charge cap's currency.
        if plan.provider == "wechatpay" && plan.currency() != Currency::CNY {
            return Err(invalid(
                "terms.per_charge_cap.currency",
                format!("{} is not CNY, the only currency WeChat Pay deducts in", plan.currency()),
            ));
        }
        let stored = terms_of(&plan);
        let now = self.platform.clock.now_ms();
        let event = pb::Event {
            kind: Some(EventKind::PlanCreated(pb::PlanCreated {
                plan_id: id.clone(),
                merchant_id: merchant.to_string(),
                terms: Some(stored.clone()),
                created_at_ms: now,
            })),
        };
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        match tx.append(&format!("plan-{id}"), ExpectedVersion::NoStream, vec![codec::encode(event, &cause, now)]).await
        {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                drop(tx);
                // The same idempotency key: the original plan, if the request is the same.
                let (existing, _) =
                    load(&self.platform, &id).await?.ok_or_else(|| internal("plan stream without a row"))?;
                if existing.terms.as_ref() == Some(&stored) {
                    return Ok(Response::new(api::CreatePlanResponse { plan: Some(existing) }));
                }
                return Err(Status::already_exists("idempotency_key was already used for a different plan"));
            }
            Err(e) => return Err(store_error(e)),
        }
        tx.execute(
            "INSERT INTO contracts_plans (plan_id, merchant_id, terms, created_at_ms) VALUES ($1, $2, $3, $4)",
            &[
                Value::from(&id),
                Value::from(merchant.to_string()),
                Value::Bytes(stored.encode_to_vec()),
                Value::Int(now),
            ],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let plan =
            api::Plan { plan_id: id, merchant_id: merchant.to_string(), terms: Some(stored), created_at_ms: now };
        Ok(Response::new(api::CreatePlanResponse { plan: Some(plan) }))
    }

    async fn get_plan(&self, req: Request<api::GetPlanRequest>) -> Result<Response<api::GetPlanResponse>, Status> {
        let principal = caller(&req)?;
        let id = &req.get_ref().plan_id;
        if id.is_empty() {
            return Err(invalid("plan_id", "is required"));
        }
        let not_found = || Status::not_found(format!("plan {id} not found"));
        let (plan, domain) = load(&self.platform, id).await?.ok_or_else(not_found)?;
        if !principal.may_see(&domain.merchant_id) {
            return Err(not_found());
        }
        Ok(Response::new(api::GetPlanResponse { plan: Some(plan) }))
    }

    async fn list_plans(
        &self,
        req: Request<api::ListPlansRequest>,
    ) -> Result<Response<api::ListPlansResponse>, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        let r = req.into_inner();
        let limit = crate::store::page_size(r.page_size);
        let rows = self
            .platform
            .store
            .query(
                "SELECT plan_id, terms, created_at_ms FROM contracts_plans WHERE merchant_id = $1 AND plan_id > $2
                 ORDER BY plan_id LIMIT $3",
                &[Value::from(merchant.to_string()), Value::from(r.page_token.as_str()), Value::Int(limit + 1)],
            )
            .await
            .map_err(store_error)?;
        let plans: Vec<api::Plan> = rows
            .iter()
            .take(limit as usize)
            .map(|row| api::Plan {
                plan_id: row.text(0).unwrap_or_default().to_string(),
                merchant_id: merchant.to_string(),
                terms: pb::PlanTerms::decode(row.bytes(1).unwrap_or_default()).ok(),
                created_at_ms: row.i64(2).unwrap_or(0),
            })
            .collect();
        let next_page_token =
            crate::store::next_page_token(rows.len(), limit, plans.last().map(|p| p.plan_id.as_str()));
        Ok(Response::new(api::ListPlansResponse { plans, next_page_token }))
    }
}
