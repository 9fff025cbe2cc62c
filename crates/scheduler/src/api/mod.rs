//! gRPC handlers of the scheduler: each parses its request into domain types, calls the use
//! case in `app`, and maps the answer (or the error) back. `risk` serves `RiskService`, `page`
//! the payer's step-up page for a held charge.
pub mod me;
pub mod page;
pub mod risk;

use crate::app::{self, App, AppError, Outcome};
use autodebit_domain::clock::from_millis;
use autodebit_domain::schedule::Schedule;
use autodebit_domain::{ContractId, Money};
use autodebit_proto::scheduler::v1::{self as pb, scheduler_service_server::SchedulerService};
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{internal, invalid, store_error};
use tonic::{Request, Response, Status};

pub struct SchedulerApi {
    app: App,
}

impl SchedulerApi {
    pub fn new(app: App) -> Self {
        SchedulerApi { app }
    }
}

fn status_of(e: AppError) -> Status {
    match e {
        AppError::NotFound(m) => Status::not_found(m),
        AppError::Precondition(m) => Status::failed_precondition(m),
        AppError::Invalid { field, problem } => invalid(field, problem),
        e @ AppError::KeyReused(_) => Status::already_exists(e.to_string()),
        e @ AppError::Concurrent => Status::aborted(e.to_string()),
        AppError::Store(e) => store_error(e),
        AppError::Internal(e) => internal(format!("{e:#}")),
    }
}

fn key_of(field: &'static str, key: &str) -> Result<(), Status> {
    if key.is_empty() || key.chars().count() > 64 {
        return Err(invalid(field, "must be 1 to 64 characters"));
    }
    Ok(())
}

fn contract_of(id: &str) -> Result<ContractId, Status> {
    ContractId::parse(id).map_err(|e| invalid("contract_id", e))
}

/// A schedule as the API shows it: the fixed side's figures only where the plan bills cycles.
fn schedule_to_pb(view: app::ScheduleView) -> pb::Schedule {
    let s: Schedule = view.schedule;
    let money = |units| codec::money_to_pb(Money::new(units, s.amount.currency()));
    let fixed = s.mode.fixed();
    let usage = s.usage.as_ref();
    let change = s.change.as_ref();
    pb::Schedule {
        contract_id: s.contract_id.to_string(),
        merchant_id: s.merchant_id.to_string(),
        amount: Some(money(s.amount.minor_units())),
        cycle: codec::cycle_to_pb(s.fixed.calendar.cycle) as i32,
        anchor_ms: s.signed_at.timestamp_millis(),
        next_period: if fixed { s.fixed.next_period } else { 0 },
        next_due_at_ms: if fixed { s.fixed.next_due.timestamp_millis() } else { 0 },
        active: s.active,
        next_usage_period: usage.map_or(0, |u| u.period),
        next_usage_period_ends_at_ms: usage.map_or(0, |u| u.ends_at.timestamp_millis()),
        open_usage_quantity: view.open_usage,
        charge_mode: match s.mode {
            autodebit_domain::plan::ChargeMode::FixedCycle => autodebit_proto::events::v1::ChargeMode::FixedCycle,
            autodebit_domain::plan::ChargeMode::Usage => autodebit_proto::events::v1::ChargeMode::Usage,
            autodebit_domain::plan::ChargeMode::EventTriggered => {
                autodebit_proto::events::v1::ChargeMode::EventTriggered
            }
            autodebit_domain::plan::ChargeMode::Hybrid => autodebit_proto::events::v1::ChargeMode::Hybrid,
        } as i32,
        time_zone: s.zone.name().to_string(),
        noticed_period: s.fixed.noticed_period,
        next_charge_at_ms: s.next_charge_at().map_or(0, |t| t.timestamp_millis()),
        change_amount: change.map(|c| money(c.amount.minor_units())),
        change_cycle: change.map_or(0, |c| codec::cycle_to_pb(c.cycle) as i32),
        change_after_period: change.map_or(0, |c| c.through),
        merchant_suspended: view.merchant_suspended,
    }
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let who = caller(&req)?;
        let id = contract_of(&req.get_ref().contract_id)?;
        let view = self.app.schedule(&who, id).await.map_err(status_of)?;
        Ok(Response::new(pb::GetScheduleResponse { schedule: Some(schedule_to_pb(view)) }))
    }

    async fn get_scheduler_status(
        &self,
        _: Request<pb::GetSchedulerStatusRequest>,
    ) -> Result<Response<pb::GetSchedulerStatusResponse>, Status> {
        let s = self.app.status().await.map_err(status_of)?;
        Ok(Response::new(pb::GetSchedulerStatusResponse {
            active_schedules: s.active_schedules,
            due_timers: s.due_timers,
            now_ms: s.now.timestamp_millis(),
            checked_through_ms: s.checked_through_ms,
        }))
    }

    async fn record_usage(
        &self,
        req: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let contract_id = contract_of(&r.contract_id)?;
        if r.quantity == 0 || i64::try_from(r.quantity).is_err() {
            return Err(invalid("quantity", "must be positive"));
        }
        key_of("idempotency_key", &r.idempotency_key)?;
        let record = app::RecordUsage {
            contract_id,
            quantity: r.quantity,
            unit: r.unit,
            occurred_at: from_millis(r.occurred_at_ms),
            idempotency_key: r.idempotency_key,
        };
        let done = self.app.record_usage(&who, record).await.map_err(status_of)?;
        Ok(Response::new(pb::RecordUsageResponse {
            usage_id: done.usage_id,
            period: done.period,
            duplicate: done.duplicate,
        }))
    }

    async fn trigger_charge(
        &self,
        req: Request<pb::TriggerChargeRequest>,
    ) -> Result<Response<pb::TriggerChargeResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let contract_id = contract_of(&r.contract_id)?;
        let amount = codec::money_from_pb(r.amount.as_ref()).map_err(|e| invalid("amount", e))?;
        if amount.minor_units() <= 0 {
            return Err(invalid("amount.minor_units", "must be positive"));
        }
        let reason = r.reason.trim();
        if reason.is_empty() || reason.chars().count() > 128 {
            return Err(invalid("reason", "must be 1 to 128 characters"));
        }
        key_of("idempotency_key", &r.idempotency_key)?;
        let trigger =
            app::TriggerCharge { contract_id, amount, reason: reason.to_string(), idempotency_key: r.idempotency_key };
        let t = self.app.trigger_charge(&who, trigger).await.map_err(status_of)?;
        let charge_id = t.charge_id.to_string();
        Ok(Response::new(match t.outcome {
            Outcome::Scheduled { charge_at_ms } => pb::TriggerChargeResponse {
                charge_id,
                outcome: pb::TriggerOutcome::Scheduled as i32,
                duplicate: t.duplicate,
                charge_at_ms,
                ..Default::default()
            },
            Outcome::Rejected { rule, detail } => pb::TriggerChargeResponse {
                charge_id,
                outcome: pb::TriggerOutcome::Rejected as i32,
                rule,
                detail,
                duplicate: t.duplicate,
                ..Default::default()
            },
            Outcome::Held { rule, detail, expires_at_ms } => pb::TriggerChargeResponse {
                charge_id,
                outcome: pb::TriggerOutcome::Held as i32,
                rule,
                detail,
                duplicate: t.duplicate,
                hold_expires_at_ms: expires_at_ms,
                ..Default::default()
            },
        }))
    }
}
