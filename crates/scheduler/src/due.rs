//! The due loop: claims schedules whose next period is due by the platform clock, issues each
//! period's charge (`ChargeScheduled`, its id derived from contract + period) and moves the
//! schedule on, all in one transaction. On PostgreSQL rows are claimed `FOR UPDATE SKIP
//! LOCKED`, so several scheduler processes share the work and never issue a charge twice; the
//! derived charge id makes a second issue impossible anyway (its stream must not exist).
use crate::store::{COLUMNS, ScheduleRow, cycle_from_str, placeholders};
use autodebit_domain::MAX_CHARGE_CNY_FEN;
use autodebit_domain::charge::{self, ChargeCommand, Issue};
use autodebit_domain::clock::from_millis;
use autodebit_domain::cycle::beijing;
use autodebit_domain::limits::{self, Limits, Today};
use autodebit_domain::plan::MAX_DAILY_COUNT;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId};
use autodebit_eventstore::{BackendKind, ExpectedVersion, StreamAppend, Value};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use std::collections::HashMap;
use std::time::Duration;

/// Schedules claimed per transaction.
const CLAIM: i64 = 1000;
/// How often the loop looks for due schedules when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

pub fn spawn(platform: Platform) {
    tokio::spawn(async move {
        let mut moved = platform.clock.watch();
        loop {
            let issued = match issue_due(&platform).await {
                Ok(n) => issue_retries(&platform).await.map(|r| n + r),
                Err(e) => Err(e),
            };
            match issued {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "issuing due charges failed; retrying");
                    autodebit_runtime::metrics::add("autodebit_scheduler_errors_total", &[], 1);
                }
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// Issues one batch of due charges; returns how many.
pub async fn issue_due(platform: &Platform) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    let now_ms = now.timestamp_millis();
    // Look on a reader first, so an idle scheduler never takes the write lock.
    let any = platform
        .store
        .query(
            "SELECT 1 FROM scheduler_schedules WHERE active = 1 AND next_due_ms <= $1 LIMIT 1",
            &[Value::Int(now_ms)],
        )
        .await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM scheduler_schedules WHERE active = 1 AND next_due_ms <= $1 \
                 ORDER BY next_due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(now_ms), Value::Int(CLAIM)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let rows: Vec<ScheduleRow> = rows
        .iter()
        .filter_map(|r| {
            let parsed = ScheduleRow::from_row(r);
            if parsed.is_none() {
                tracing::error!(?r, "unreadable schedule row skipped");
            }
            parsed
        })
        .collect();

    // The limits of every claimed contract's plan, and what each was charged today.
    let mut plan_ids: Vec<&str> = rows.iter().map(|r| r.plan_id.as_str()).filter(|p| !p.is_empty()).collect();
    plan_ids.sort_unstable();
    plan_ids.dedup();
    let mut plans: HashMap<String, (i64, i64, i64)> = HashMap::new();
    if !plan_ids.is_empty() {
        let found = tx
            .query(
                &format!(
                    "SELECT plan_id, per_charge_cap, daily_count_limit, daily_amount_limit FROM scheduler_plans WHERE plan_id IN ({})",
                    placeholders(1, plan_ids.len())
                ),
                &plan_ids.iter().map(|p| Value::from(*p)).collect::<Vec<_>>(),
            )
            .await?;
        for r in &found {
            if let (Some(id), Some(cap), Some(count), Some(amount)) = (r.text(0), r.i64(1), r.i64(2), r.i64(3)) {
                plans.insert(id.to_string(), (cap, count, amount));
            }
        }
    }
    let day = now.with_timezone(&beijing()).format("%Y-%m-%d").to_string();
    let mut today: HashMap<String, Today> = HashMap::new();
    {
        let mut params = vec![Value::from(&day)];
        params.extend(rows.iter().map(|r| Value::from(&r.contract_id)));
        let found = tx
            .query(
                &format!(
                    "SELECT contract_id, count, amount FROM scheduler_daily WHERE day = $1 AND contract_id IN ({})",
                    placeholders(2, rows.len())
                ),
                &params,
            )
            .await?;
        for r in &found {
            if let (Some(id), Some(count), Some(amount)) = (r.text(0), r.i64(1), r.i64(2)) {
                today.insert(id.to_string(), Today { count: u32::try_from(count).unwrap_or(u32::MAX), amount });
            }
        }
    }

    let mut appends = Vec::with_capacity(rows.len());
    let mut moves = Vec::with_capacity(rows.len());
    let mut charged: Vec<(String, i64)> = Vec::new();
    let mut rejected = 0;
    for row in &rows {
        // Past the contract's validity nothing more is charged.
        if row.expires_at_ms > 0 && row.next_due_ms > row.expires_at_ms {
            tx.execute(
                "UPDATE scheduler_schedules SET active = 0 WHERE contract_id = $1",
                &[Value::from(&row.contract_id)],
            )
            .await?;
            continue;
        }
        let Some((issue, next_due)) = issue_for(row) else {
            tracing::error!(contract = row.contract_id, "schedule cannot be billed; deactivated");
            tx.execute(
                "UPDATE scheduler_schedules SET active = 0 WHERE contract_id = $1",
                &[Value::from(&row.contract_id)],
            )
            .await?;
            continue;
        };
        let limits = limits_of(row, plans.get(&row.plan_id).copied(), now_ms);
        let used = today.entry(row.contract_id.clone()).or_default();
        let command = match limits::check(issue.amount, &limits, *used) {
            Ok(()) => {
                used.count += 1;
                used.amount += issue.amount.minor_units();
                charged.push((row.contract_id.clone(), issue.amount.minor_units()));
                ChargeCommand::Schedule {
                    charge_id: issue.charge_id,
                    contract_id: issue.contract_id,
                    merchant_id: issue.merchant_id.clone(),
                    payer_id: issue.payer_id.clone(),
                    amount: issue.amount,
                    period: issue.period,
                    due_at: issue.due_at,
                }
            }
            Err(breach) => {
                rejected += 1;
                ChargeCommand::Reject {
                    issue: Some(issue.clone()),
                    rule: breach.rule.to_string(),
                    detail: breach.detail,
                }
            }
        };
        let Ok(events) = charge::decide(&None, command, now) else { continue };
        let cause = Cause::request(format!("{}/period/{}", issue.contract_id, issue.period));
        let encoded = events
            .iter()
            .filter_map(|e| codec::charge_event_to_pb(None, e))
            .map(|e| codec::encode(e, &cause, now_ms))
            .collect();
        appends.push(StreamAppend {
            stream: issue.charge_id.stream(),
            expected: ExpectedVersion::NoStream,
            events: encoded,
        });
        moves.push((row.contract_id.clone(), row.next_period + 1, next_due));
    }
    // A charge stream that already exists means that period was issued before (say, the
    // schedule table was restored from an older copy): it is not issued again, and the
    // schedule moves on past it all the same.
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        if let Err(e) = outcome {
            tracing::warn!(stream = append.stream, error = %e, "period already issued; moving on");
        }
    }
    for (contract_id, period, due) in &moves {
        tx.execute(
            "UPDATE scheduler_schedules SET next_period = $1, next_due_ms = $2 WHERE contract_id = $3",
            &[Value::Int(*period), Value::Int(*due), Value::from(contract_id)],
        )
        .await?;
    }
    for (contract_id, amount) in &charged {
        tx.execute(
            "INSERT INTO scheduler_daily (contract_id, day, count, amount) VALUES ($1, $2, 1, $3)
             ON CONFLICT (contract_id, day) DO UPDATE SET count = scheduler_daily.count + 1,
               amount = scheduler_daily.amount + excluded.amount",
            &[Value::from(contract_id), Value::from(&day), Value::Int(*amount)],
        )
        .await?;
    }
    if rejected > 0 {
        autodebit_runtime::metrics::add("autodebit_charges_rejected_total", &[], rejected);
    }
    tx.commit().await?;
    autodebit_runtime::metrics::add("autodebit_charges_scheduled_total", &[], appends.len() as i64);
    Ok(appends.len())
}

/// The charge a schedule's next period calls for, and when the period after falls due.
fn issue_for(row: &ScheduleRow) -> Option<(Issue, i64)> {
    let contract_id = ContractId::parse(&row.contract_id).ok()?;
    let cycle = cycle_from_str(&row.cycle)?;
    let period = u32::try_from(row.next_period).ok()?;
    let issue = Issue {
        charge_id: ChargeId::for_period(contract_id, period),
        contract_id,
        merchant_id: MerchantId::parse(&row.merchant_id).ok()?,
        payer_id: PayerId::parse(&row.payer_id).ok()?,
        amount: Money::new(row.amount, Currency::parse(&row.currency).ok()?),
        period,
        due_at: from_millis(row.next_due_ms),
    };
    let next_due = cycle.due_at(from_millis(row.anchor_ms), period.checked_add(1)?, beijing())?;
    Some((issue, next_due.timestamp_millis()))
}

/// A contract's limits: its plan's, or the platform's where it has no plan; the daily amount
/// defaults to three times its monthly average once it has a month of history.
fn limits_of(row: &ScheduleRow, plan: Option<(i64, i64, i64)>, now_ms: i64) -> Limits {
    const MONTH_MS: i64 = 30 * 86_400_000;
    let (cap, count, daily) = plan.unwrap_or((MAX_CHARGE_CNY_FEN, i64::from(MAX_DAILY_COUNT), 0));
    let months = if row.first_success_ms > 0 { (now_ms - row.first_success_ms) / MONTH_MS } else { 0 };
    Limits {
        per_charge_cap: if cap > 0 { cap } else { MAX_CHARGE_CNY_FEN },
        daily_count: u32::try_from(count).ok().filter(|c| *c > 0).unwrap_or(MAX_DAILY_COUNT),
        daily_amount: if daily > 0 { Some(daily) } else { limits::default_daily_amount(row.total_succeeded, months) },
    }
}

/// Issues the retries that are due: each failed charge's next attempt, once its timer (at least
/// six hours after the failure) has passed and its contract still bills. Returns how many.
pub async fn issue_retries(platform: &Platform) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    let now_ms = now.timestamp_millis();
    let any = platform
        .store
        .query(
            "SELECT 1 FROM scheduler_retries WHERE state = 'waiting' AND due_ms <= $1 LIMIT 1",
            &[Value::Int(now_ms)],
        )
        .await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF r SKIP LOCKED" } else { "" };
    let rows = tx
        .query(
            &format!(
                "SELECT r.charge_id, r.stream_version FROM scheduler_retries r
                 JOIN scheduler_schedules s ON s.contract_id = r.contract_id
                 WHERE r.state = 'waiting' AND r.due_ms <= $1 AND s.active = 1
                 ORDER BY r.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(now_ms), Value::Int(CLAIM)],
        )
        .await?;
    let mut appends = Vec::with_capacity(rows.len());
    for row in &rows {
        let (Some(charge_id), Some(version)) = (row.text(0), row.i64(1)) else { continue };
        let Ok(id) = ChargeId::parse(charge_id) else { continue };
        let state = platform
            .store
            .read_stream(&id.stream(), 0)
            .await?
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| codec::charge_event_from_pb(&d.kind))
            .fold(None, |s, e| charge::apply(s, &e));
        tx.execute("UPDATE scheduler_retries SET state = 'issued' WHERE charge_id = $1", &[Value::from(charge_id)])
            .await?;
        // Anything else that happened to the charge since (an outcome arrived late) wins.
        let Ok(events) = charge::decide(&state, ChargeCommand::Retry, now) else { continue };
        let cause = Cause::request(format!("{id}/retry"));
        let encoded = events
            .iter()
            .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
            .map(|e| codec::encode(e, &cause, now_ms))
            .collect();
        appends.push(StreamAppend {
            stream: id.stream(),
            expected: ExpectedVersion::Exact(version as u64),
            events: encoded,
        });
    }
    let mut issued = 0;
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        match outcome {
            Ok(_) => issued += 1,
            Err(e) => {
                tracing::warn!(stream = append.stream, error = %e, "charge moved on before its retry; not retried")
            }
        }
    }
    tx.commit().await?;
    autodebit_runtime::metrics::add("autodebit_charge_retries_total", &[], issued as i64);
    Ok(rows.len())
}
