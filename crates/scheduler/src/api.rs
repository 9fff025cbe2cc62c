//! gRPC handlers of the scheduler: reading schedules, and the two merchant calls that make
//! charges happen outside the calendar — RecordUsage and TriggerCharge.
use crate::issue::{admit, charge_append, load_plans};
use crate::store::{COLUMNS, Db, Mode, ScheduleRow, cycle_from_str, suspended_merchants};
use autodebit_domain::charge::Issue;
use autodebit_domain::clock::from_millis;
use autodebit_domain::window::DailyWindow;
use autodebit_domain::{ChargeId, ContractId, Currency, Money};
use autodebit_eventstore::{BackendKind, ExpectedVersion, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as events, ChargeReason};
use autodebit_proto::scheduler::v1::{self as pb, scheduler_service_server::SchedulerService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::grpc::{internal, invalid, store_error};
use tonic::{Request, Response, Status};

/// How far in the future a usage record's time may lie (clock skew between systems).
const USAGE_SKEW_MS: i64 = 5 * 60_000;
const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e1d_0c2a_9b47_4f83_a61e_28c9_d0b3_7a45);

pub struct SchedulerApi {
    platform: Platform,
    window: DailyWindow,
    /// See `due::spawn`.
    checked_through: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SchedulerApi {
    pub fn new(
        platform: Platform,
        window: DailyWindow,
        checked_through: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ) -> Self {
        SchedulerApi { platform, window, checked_through }
    }

    /// A contract's schedule, locked for the transaction on PostgreSQL (SQLite's single
    /// writer already serialises), and checked to be the caller's.
    async fn locked(&self, tx: &mut Tx, contract_id: &str, who: &Principal) -> Result<ScheduleRow, Status> {
        let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE" } else { "" };
        let rows = tx
            .query(
                &format!("SELECT {COLUMNS} FROM scheduler_schedules WHERE contract_id = $1{lock}"),
                &[Value::from(contract_id)],
            )
            .await
            .map_err(store_error)?;
        let row = rows.first().and_then(ScheduleRow::from_row);
        match row {
            Some(r) if who.may_see(&autodebit_domain::MerchantId::parse(&r.merchant_id).map_err(invalid_id)?) => Ok(r),
            _ => Err(Status::not_found(format!(
                "contract_id: no contract {contract_id} (one signed a moment ago reaches the scheduler within moments)"
            ))),
        }
    }
}

fn invalid_id(e: autodebit_domain::IdError) -> Status {
    autodebit_runtime::grpc::internal(format!("stored merchant id: {e}"))
}

fn key_of(field: &'static str, key: &str) -> Result<(), Status> {
    if key.is_empty() || key.chars().count() > 64 {
        return Err(invalid(field, "must be 1 to 64 characters"));
    }
    Ok(())
}

/// Why a schedule takes no charge now, as the error a caller sees; `None` when it does.
fn refusal(row: &ScheduleRow, now_ms: i64) -> Option<Status> {
    if !row.active {
        return Some(Status::failed_precondition(format!(
            "contract_id: contract {} is not active (suspended, terminated or expired)",
            row.contract_id
        )));
    }
    if row.expires_at_ms > 0 && now_ms > row.expires_at_ms {
        return Some(Status::failed_precondition(format!("contract_id: contract {} has expired", row.contract_id)));
    }
    None
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let who = caller(&req)?;
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
            .filter(|r| autodebit_domain::MerchantId::parse(&r.merchant_id).is_ok_and(|m| who.may_see(&m)))
            .ok_or_else(|| Status::not_found(format!("contract_id: no schedule for contract {id}")))?;
        let open_usage = if row.mode.metered() {
            self.platform
                .store
                .query(
                    "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM scheduler_usage
                     WHERE contract_id = $1 AND period = $2",
                    &[Value::from(&row.contract_id), Value::Int(row.usage_period)],
                )
                .await
                .map_err(store_error)?
                .first()
                .and_then(|r| r.i64(0))
                .unwrap_or(0)
        } else {
            0
        };
        let money = |units| Currency::parse(&row.currency).map(|c| codec::money_to_pb(Money::new(units, c))).ok();
        let amount = money(row.amount);
        let waiting = row.change_through >= 0;
        let merchant_suspended = !suspended_merchants(&mut Db::Store(&self.platform.store), &[&row.merchant_id])
            .await
            .map_err(store_error)?
            .is_empty();
        let cycle_pb = |c: &str| cycle_from_str(c).map(|c| codec::cycle_to_pb(c) as i32).unwrap_or(0);
        let fixed = row.mode.fixed();
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: Some(pb::Schedule {
                contract_id: row.contract_id,
                merchant_id: row.merchant_id,
                amount,
                cycle: cycle_pb(&row.cycle),
                anchor_ms: row.anchor_ms,
                next_period: if fixed { u32::try_from(row.next_period).unwrap_or(u32::MAX) } else { 0 },
                next_due_at_ms: if fixed { row.next_due_ms } else { 0 },
                active: row.active,
                next_usage_period: u32::try_from(row.usage_period).unwrap_or(0),
                next_usage_period_ends_at_ms: row.usage_end_ms,
                open_usage_quantity: u64::try_from(open_usage).unwrap_or(0),
                charge_mode: row.mode.to_pb() as i32,
                time_zone: row.time_zone.clone(),
                noticed_period: u32::try_from(row.noticed_period).unwrap_or(0),
                next_charge_at_ms: match (fixed, row.noticed_period >= row.next_period) {
                    (false, _) => 0,
                    (true, true) => row.next_due_ms.max(row.ready_ms),
                    (true, false) => row.next_due_ms,
                },
                change_amount: if waiting { money(row.change_amount) } else { None },
                change_cycle: if waiting { cycle_pb(&row.change_cycle) } else { 0 },
                change_after_period: if waiting { u32::try_from(row.change_through).unwrap_or(0) } else { 0 },
                merchant_suspended,
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
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN wake_ms <= $1 THEN 1 ELSE 0 END), 0)
                 FROM scheduler_schedules WHERE active = 1",
                &[Value::Int(now_ms)],
            )
            .await
            .map_err(store_error)?;
        let count = |i| rows.first().and_then(|r| r.i64(i)).unwrap_or(0).max(0) as u64;
        Ok(Response::new(pb::GetSchedulerStatusResponse {
            active_schedules: count(0),
            due_timers: count(1),
            now_ms,
            checked_through_ms: self.checked_through.load(std::sync::atomic::Ordering::SeqCst),
        }))
    }

    async fn record_usage(
        &self,
        req: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let contract = ContractId::parse(&r.contract_id).map_err(|e| invalid("contract_id", e))?;
        if r.quantity == 0 || i64::try_from(r.quantity).is_err() {
            return Err(invalid("quantity", "must be positive"));
        }
        key_of("idempotency_key", &r.idempotency_key)?;
        let now = self.platform.clock.now();
        let now_ms = now.timestamp_millis();
        if r.occurred_at_ms > now_ms + USAGE_SKEW_MS {
            return Err(invalid("occurred_at_ms", format!("{} is in the future (now {now_ms})", r.occurred_at_ms)));
        }
        let usage_id = format!(
            "us_{}",
            uuid::Uuid::new_v5(&NAMESPACE, format!("{contract}\0{}", r.idempotency_key).as_bytes()).simple()
        );
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let row = self.locked(&mut tx, &r.contract_id, &who).await?;
        // A repeated key answers with the first record.
        let seen = tx
            .query("SELECT period FROM scheduler_usage WHERE usage_id = $1", &[Value::from(&usage_id)])
            .await
            .map_err(store_error)?;
        if let Some(period) = seen.first().and_then(|r| r.i64(0)) {
            return Ok(Response::new(pb::RecordUsageResponse {
                usage_id,
                period: u32::try_from(period).unwrap_or(0),
                duplicate: true,
            }));
        }
        if !row.mode.metered() {
            return Err(Status::failed_precondition(format!(
                "contract_id: its plan is {}; usage is recorded only for usage and hybrid plans",
                row.mode.as_str()
            )));
        }
        if let Some(refused) = refusal(&row, now_ms) {
            return Err(refused);
        }
        if r.occurred_at_ms < row.anchor_ms {
            return Err(invalid("occurred_at_ms", "is before the contract was signed"));
        }
        let plans = load_plans(&mut Db::Tx(&mut tx), &[&row]).await.map_err(|e| internal(format!("{e:#}")))?;
        let unit = plans.get(&row.plan_id).map(|p| p.usage_unit.clone()).unwrap_or_default();
        if r.unit != unit {
            return Err(invalid("unit", format!("{:?} is not the plan's unit {unit:?}", r.unit)));
        }
        let period = usage_period(&row, r.occurred_at_ms, now_ms)
            .ok_or_else(|| internal("the contract's usage periods cannot be computed"))?;
        tx.execute(
            "INSERT INTO scheduler_usage (usage_id, contract_id, period, quantity, occurred_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                Value::from(&usage_id),
                Value::from(&row.contract_id),
                Value::Int(period),
                Value::Int(r.quantity as i64),
                Value::Int(r.occurred_at_ms),
            ],
        )
        .await
        .map_err(store_error)?;
        // The usage changes what the schedule's open period bills.
        tx.execute(
            "UPDATE scheduler_schedules SET rev = rev + 1 WHERE contract_id = $1",
            &[Value::from(&row.contract_id)],
        )
        .await
        .map_err(store_error)?;
        let event = events::Event {
            kind: Some(EventKind::UsageRecorded(events::UsageRecorded {
                usage_id: usage_id.clone(),
                contract_id: row.contract_id.clone(),
                merchant_id: row.merchant_id.clone(),
                payer_id: row.payer_id.clone(),
                quantity: r.quantity,
                unit: r.unit,
                occurred_at_ms: r.occurred_at_ms,
                period: u32::try_from(period).unwrap_or(0),
                idempotency_key: r.idempotency_key,
                recorded_at_ms: now_ms,
            })),
        };
        tx.append(
            &format!("usage-{}", row.contract_id),
            ExpectedVersion::Any,
            vec![codec::encode(event, &Cause::request(&usage_id), now_ms)],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::USAGE_RECORDS, &[], 1);
        Ok(Response::new(pb::RecordUsageResponse {
            usage_id,
            period: u32::try_from(period).unwrap_or(0),
            duplicate: false,
        }))
    }

    async fn trigger_charge(
        &self,
        req: Request<pb::TriggerChargeRequest>,
    ) -> Result<Response<pb::TriggerChargeResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let contract = ContractId::parse(&r.contract_id).map_err(|e| invalid("contract_id", e))?;
        let amount = codec::money_from_pb(r.amount.as_ref()).map_err(|e| invalid("amount", e))?;
        if amount.minor_units() <= 0 {
            return Err(invalid("amount.minor_units", "must be positive"));
        }
        let reason = r.reason.trim();
        if reason.is_empty() || reason.chars().count() > 128 {
            return Err(invalid("reason", "must be 1 to 128 characters"));
        }
        key_of("idempotency_key", &r.idempotency_key)?;
        let charge_id = ChargeId::for_trigger(contract, &r.idempotency_key);
        let now = self.platform.clock.now();
        let now_ms = now.timestamp_millis();
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let row = self.locked(&mut tx, &r.contract_id, &who).await?;
        // Read in the transaction: a call never waits for a second connection while it holds
        // one (and the lock on its schedule row).
        if let Some(answer) = earlier_answer(Db::Tx(&mut tx), charge_id, amount).await? {
            return Ok(Response::new(answer));
        }
        if row.mode != Mode::Event {
            return Err(Status::failed_precondition(format!(
                "contract_id: its plan is {}; TriggerCharge is for event-triggered plans",
                row.mode.as_str()
            )));
        }
        if amount.currency().as_str() != row.currency {
            return Err(invalid("amount.currency", format!("must be the contract's currency {}", row.currency)));
        }
        let base = crate::due::base_issue(&row).ok_or_else(|| internal("the schedule cannot be billed"))?;
        let issue = Issue { charge_id, amount, period: 0, due_at: now, ..base };
        // A contract that no longer bills is answered with a rejected charge, like a limit.
        let admitted = match refusal(&row, now_ms) {
            Some(_) if !row.active => Err(autodebit_domain::limits::Breach {
                rule: "contract_state",
                detail: "the contract is not active (suspended, terminated or expired)".into(),
            }),
            Some(_) => Err(autodebit_domain::limits::Breach {
                rule: "validity",
                detail: format!("the contract expired at {}", from_millis(row.expires_at_ms).to_rfc3339()),
            }),
            None => Ok(()),
        };
        let plans = load_plans(&mut Db::Tx(&mut tx), &[&row]).await.map_err(|e| internal(format!("{e:#}")))?;
        let suspended = suspended_merchants(&mut Db::Tx(&mut tx), &[&row.merchant_id]).await.map_err(store_error)?;
        let mut row = row;
        let plan = plans.get(&row.plan_id).cloned();
        let admitted = admitted
            .and_then(|()| autodebit_domain::limits::check_merchant(suspended.contains(&row.merchant_id)))
            .and_then(|()| admit(&mut row, plan.as_ref(), amount, now));
        // Outside the charge window an admitted charge is held until it opens.
        let charge_at = self.window.next_open(now);
        let held = admitted.is_ok() && charge_at > now;
        let answer = match &admitted {
            Ok(()) => pb::TriggerChargeResponse {
                charge_id: charge_id.to_string(),
                outcome: pb::TriggerOutcome::Scheduled as i32,
                charge_at_ms: charge_at.timestamp_millis(),
                ..Default::default()
            },
            Err(b) => pb::TriggerChargeResponse {
                charge_id: charge_id.to_string(),
                outcome: pb::TriggerOutcome::Rejected as i32,
                rule: b.rule.to_string(),
                detail: b.detail.clone(),
                duplicate: false,
                charge_at_ms: 0,
            },
        };
        let cause = Cause::request(format!("{contract}/trigger/{}", r.idempotency_key));
        if held {
            let inserted = tx
                .execute(
                    "INSERT INTO scheduler_held
                       (charge_id, contract_id, merchant_id, payer_id, amount, currency, reason, due_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (charge_id) DO NOTHING",
                    &[
                        Value::from(charge_id.to_string()),
                        Value::from(&row.contract_id),
                        Value::from(&row.merchant_id),
                        Value::from(&row.payer_id),
                        Value::Int(amount.minor_units()),
                        Value::from(amount.currency().as_str()),
                        Value::from(reason),
                        Value::Int(charge_at.timestamp_millis()),
                    ],
                )
                .await
                .map_err(store_error)?;
            if inserted == 0 {
                drop(tx);
                return self.concurrent_answer(charge_id, amount).await;
            }
            self.count_today(&mut tx, &row).await?;
            tx.commit().await.map_err(store_error)?;
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_HELD, &[], 1);
            return Ok(Response::new(answer));
        }
        let (append, ok) = charge_append(issue, admitted, ChargeReason::Trigger, reason, &cause, now);
        match tx.append(&append.stream, append.expected, append.events).await {
            Ok(_) => {}
            // Another call with the same key got there first: its answer is the answer.
            Err(e) if e.is_conflict() => {
                drop(tx);
                return self.concurrent_answer(charge_id, amount).await;
            }
            Err(e) => return Err(store_error(e)),
        }
        if ok {
            self.count_today(&mut tx, &row).await?;
        }
        tx.commit().await.map_err(store_error)?;
        let metric = if ok {
            autodebit_runtime::metrics::CHARGES_SCHEDULED
        } else {
            autodebit_runtime::metrics::CHARGES_REJECTED
        };
        autodebit_runtime::metrics::add(metric, &[], 1);
        Ok(Response::new(answer))
    }
}

impl SchedulerApi {
    /// The answer of a concurrent call with the same key that got there first.
    async fn concurrent_answer(
        &self,
        charge_id: ChargeId,
        amount: Money,
    ) -> Result<Response<pb::TriggerChargeResponse>, Status> {
        earlier_answer(Db::Store(&self.platform.store), charge_id, amount)
            .await?
            .map(Response::new)
            .ok_or_else(|| Status::aborted("a concurrent call with this idempotency key failed; retry"))
    }

    /// Saves the contract's count and total for the day, as `admit` left them on `row`.
    async fn count_today(&self, tx: &mut Tx, row: &ScheduleRow) -> Result<(), Status> {
        tx.execute(
            "UPDATE scheduler_schedules SET day_key = $1, day_count = $2, day_amount = $3, rev = rev + 1
             WHERE contract_id = $4",
            &[
                Value::from(&row.day_key),
                Value::Int(row.day_count),
                Value::Int(row.day_amount),
                Value::from(&row.contract_id),
            ],
        )
        .await
        .map_err(store_error)?;
        Ok(())
    }
}

/// The answer a charge id already has, if it was issued or is held for the window: the same
/// again for the same amount, an error for a different one.
async fn earlier_answer(
    mut db: Db<'_>,
    charge_id: ChargeId,
    amount: Money,
) -> Result<Option<pb::TriggerChargeResponse>, Status> {
    let held = db
        .query(
            "SELECT amount, currency, due_ms FROM scheduler_held WHERE charge_id = $1",
            &[Value::from(charge_id.to_string())],
        )
        .await
        .map_err(store_error)?;
    if let Some(h) = held.first() {
        let earlier = Currency::parse(h.text(1).unwrap_or_default()).ok().map(|c| Money::new(h.i64(0).unwrap_or(0), c));
        if earlier != Some(amount) {
            return Err(Status::already_exists(format!(
                "idempotency_key: already used for a charge of a different amount ({charge_id})"
            )));
        }
        return Ok(Some(pb::TriggerChargeResponse {
            charge_id: charge_id.to_string(),
            outcome: pb::TriggerOutcome::Scheduled as i32,
            duplicate: true,
            charge_at_ms: h.i64(2).unwrap_or(0),
            ..Default::default()
        }));
    }
    let first = db.read_stream(&charge_id.stream(), 0).await.map_err(store_error)?;
    let Some(kind) = first.first().and_then(|e| codec::decode(e.clone())).map(|d| d.kind) else { return Ok(None) };
    // A scheduled charge goes when it was due: the moment of the call, or the opening of
    // the charge window it was held for, as the first answer said.
    let (outcome, rule, detail, earlier, charge_at_ms) = match kind {
        EventKind::ChargeScheduled(s) => {
            (pb::TriggerOutcome::Scheduled, String::new(), String::new(), s.amount, s.due_at_ms)
        }
        EventKind::ChargeRejected(r) => (pb::TriggerOutcome::Rejected, r.rule, r.detail, r.amount, 0),
        _ => return Ok(None),
    };
    if codec::money_from_pb(earlier.as_ref()).ok() != Some(amount) {
        return Err(Status::already_exists(format!(
            "idempotency_key: already used for a charge of a different amount ({charge_id})"
        )));
    }
    Ok(Some(pb::TriggerChargeResponse {
        charge_id: charge_id.to_string(),
        outcome: outcome as i32,
        rule,
        detail,
        duplicate: true,
        charge_at_ms,
    }))
}

/// The usage period a record counts in: the one it occurred in while that period's grace
/// window is open, else the first period still open (late usage moves forward, never back
/// into a period already billed).
fn usage_period(row: &ScheduleRow, occurred_ms: i64, now_ms: i64) -> Option<i64> {
    let cycle = cycle_from_str(&row.usage_cycle)?;
    let tz = autodebit_domain::cycle::zone(&row.time_zone).ok()?;
    let anchor = from_millis(row.anchor_ms);
    let end = |p: i64| -> Option<i64> { Some(cycle.due_at(anchor, u32::try_from(p).ok()?, &tz)?.timestamp_millis()) };
    // The first period not billed yet whose grace window is still open.
    let mut open = row.usage_period.max(1);
    while end(open)? + row.usage_grace_ms <= now_ms {
        open += 1;
    }
    // The period it occurred in, searched from there.
    let mut p = open;
    while end(p)? <= occurred_ms {
        p += 1;
    }
    Some(p)
}
