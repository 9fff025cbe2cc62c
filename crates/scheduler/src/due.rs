//! The due loop: claims schedules whose next period is due by the platform clock, issues each
//! period's charge (`ChargeScheduled`, its id derived from contract + period) and moves the
//! schedule on, all in one transaction. On PostgreSQL rows are claimed `FOR UPDATE SKIP
//! LOCKED`, so several scheduler processes share the work and never issue a charge twice; the
//! derived charge id makes a second issue impossible anyway (its stream must not exist).
use crate::store::{COLUMNS, ScheduleRow, cycle_from_str};
use autodebit_domain::charge::{self, ChargeCommand};
use autodebit_domain::clock::from_millis;
use autodebit_domain::cycle::beijing;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId};
use autodebit_eventstore::{BackendKind, ExpectedVersion, StreamAppend, Value};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use std::time::Duration;

/// Schedules claimed per transaction.
const CLAIM: i64 = 1000;
/// How often the loop looks for due schedules when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

pub fn spawn(platform: Platform) {
    tokio::spawn(async move {
        let mut moved = platform.clock.watch();
        loop {
            match issue_due(&platform).await {
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
    let mut appends = Vec::with_capacity(rows.len());
    let mut moves = Vec::with_capacity(rows.len());
    for row in rows.iter().filter_map(|r| {
        let parsed = ScheduleRow::from_row(r);
        if parsed.is_none() {
            tracing::error!(?r, "unreadable schedule row skipped");
        }
        parsed
    }) {
        let Some((append, next_due)) = charge_for(&row, now_ms) else {
            tracing::error!(contract = row.contract_id, "schedule cannot be billed; deactivated");
            tx.execute(
                "UPDATE scheduler_schedules SET active = 0 WHERE contract_id = $1",
                &[Value::from(&row.contract_id)],
            )
            .await?;
            continue;
        };
        appends.push(append);
        moves.push((row.contract_id, row.next_period + 1, next_due));
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
    tx.commit().await?;
    autodebit_runtime::metrics::add("autodebit_charges_scheduled_total", &[], appends.len() as i64);
    Ok(appends.len())
}

/// The `ChargeScheduled` for a schedule's next period, and when the period after falls due.
fn charge_for(row: &ScheduleRow, now_ms: i64) -> Option<(StreamAppend, i64)> {
    let contract_id = ContractId::parse(&row.contract_id).ok()?;
    let cycle = cycle_from_str(&row.cycle)?;
    let period = u32::try_from(row.next_period).ok()?;
    let charge_id = ChargeId::for_period(contract_id, period);
    let command = ChargeCommand::Schedule {
        charge_id,
        contract_id,
        merchant_id: MerchantId::parse(&row.merchant_id).ok()?,
        payer_id: PayerId::parse(&row.payer_id).ok()?,
        amount: Money::new(row.amount, Currency::parse(&row.currency).ok()?),
        period,
        due_at: from_millis(row.next_due_ms),
    };
    let events = charge::decide(&None, command, from_millis(now_ms)).ok()?;
    let cause = Cause::request(format!("{contract_id}/period/{period}"));
    let encoded = events
        .iter()
        .filter_map(|e| codec::charge_event_to_pb(None, e))
        .map(|e| codec::encode(e, &cause, now_ms))
        .collect();
    let next_due = cycle.due_at(from_millis(row.anchor_ms), period.checked_add(1)?, beijing())?;
    Some((
        StreamAppend { stream: charge_id.stream(), expected: ExpectedVersion::NoStream, events: encoded },
        next_due.timestamp_millis(),
    ))
}
