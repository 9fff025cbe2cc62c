//! gRPC handlers of the scheduler.
use crate::store::{COLUMNS, ScheduleRow, cycle_from_str};
use autodebit_domain::{ContractId, Currency, Money};
use autodebit_eventstore::Value;
use autodebit_proto::scheduler::v1::{self as pb, scheduler_service_server::SchedulerService};
use autodebit_runtime::Platform;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct SchedulerApi {
    platform: Platform,
}

impl SchedulerApi {
    pub fn new(platform: Platform) -> Self {
        SchedulerApi { platform }
    }
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let id = ContractId::parse(&req.get_ref().contract_id).map_err(|e| invalid("contract_id", e))?;
        let rows = self
            .platform
            .store
            .query(
                &format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE contract_id = $1"),
                &[Value::from(id.to_string())],
            )
            .await
            .map_err(store_error)?;
        let row = rows
            .first()
            .and_then(ScheduleRow::from_row)
            .ok_or_else(|| Status::not_found(format!("no schedule for contract {id}")))?;
        let amount = Currency::parse(&row.currency).map(|c| codec::money_to_pb(Money::new(row.amount, c))).ok();
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: Some(pb::Schedule {
                contract_id: row.contract_id,
                merchant_id: row.merchant_id,
                amount,
                cycle: cycle_from_str(&row.cycle).map(|c| codec::cycle_to_pb(c) as i32).unwrap_or(0),
                anchor_ms: row.anchor_ms,
                next_period: u32::try_from(row.next_period).unwrap_or(u32::MAX),
                next_due_at_ms: row.next_due_ms,
                active: row.active,
            }),
        }))
    }

    async fn get_scheduler_status(
        &self,
        _: Request<pb::GetSchedulerStatusRequest>,
    ) -> Result<Response<pb::GetSchedulerStatusResponse>, Status> {
        let now_ms = self.platform.clock.now_ms();
        let rows = self
            .platform
            .store
            .query(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN next_due_ms <= $1 THEN 1 ELSE 0 END), 0)
                 FROM scheduler_schedules WHERE active = 1",
                &[Value::Int(now_ms)],
            )
            .await
            .map_err(store_error)?;
        let count = |i| rows.first().and_then(|r| r.i64(i)).unwrap_or(0).max(0) as u64;
        Ok(Response::new(pb::GetSchedulerStatusResponse { active_schedules: count(0), due_timers: count(1), now_ms }))
    }
}
