//! Issuing a charge, shared by the due loop and TriggerCharge: the limits of the contract's
//! plan against what it was charged today (in its merchant's calendar), checked and counted on
//! the schedule row the transaction holds, so no two charges can both take the last slot.
use crate::store::{Db, PLAN_COLUMNS, PlanRow, ScheduleRow, in_list};
use autodebit_domain::MAX_CHARGE_CNY_FEN;
use autodebit_domain::charge::{self, ChargeCommand, Issue};
use autodebit_domain::limits::{self, Limits, Today};
use autodebit_domain::plan::MAX_DAILY_COUNT;
use autodebit_domain::{Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StreamAppend};
use autodebit_proto::events::v1::ChargeReason;
use autodebit_runtime::codec::{self, Cause};
use std::collections::HashMap;

/// The plans named by `rows`, by id.
pub async fn load_plans(db: &mut Db<'_>, rows: &[&ScheduleRow]) -> anyhow::Result<HashMap<String, PlanRow>> {
    let mut ids: Vec<&str> = rows.iter().map(|r| r.plan_id.as_str()).filter(|p| !p.is_empty()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut plans = HashMap::new();
    if ids.is_empty() {
        return Ok(plans);
    }
    let (list, params) = in_list(db.kind(), 1, &ids);
    let found =
        db.query(&format!("SELECT {PLAN_COLUMNS} FROM scheduler_plans WHERE plan_id IN {list}"), &params).await?;
    plans.extend(found.iter().filter_map(PlanRow::from_row));
    Ok(plans)
}

/// The calendar day `at` falls on for a contract, in its merchant's zone.
pub fn day_of(row: &ScheduleRow, at: Timestamp) -> String {
    let tz = autodebit_domain::cycle::zone(&row.time_zone).unwrap_or(chrono_tz::Asia::Shanghai);
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// Checks `amount` against the contract's limits and what it was charged so far on its day
/// of `now` (kept on the schedule row, so it is read and written with the row the transaction
/// holds); on success counts the charge.
pub fn admit(
    row: &mut ScheduleRow,
    plan: Option<&PlanRow>,
    amount: Money,
    now: Timestamp,
) -> Result<(), limits::Breach> {
    let day = day_of(row, now);
    let used = if row.day_key == day {
        Today { count: u32::try_from(row.day_count).unwrap_or(u32::MAX), amount: row.day_amount }
    } else {
        Today::default()
    };
    limits::check(amount, &limits_of(row, plan, now.timestamp_millis()), used)?;
    row.day_key = day;
    row.day_count = i64::from(used.count) + 1;
    row.day_amount = used.amount + amount.minor_units();
    Ok(())
}

/// A contract's limits: its plan's, or the platform's where it has no plan; the daily amount
/// defaults to three times its monthly average once it has a month of history.
pub fn limits_of(row: &ScheduleRow, plan: Option<&PlanRow>, now_ms: i64) -> Limits {
    const MONTH_MS: i64 = 30 * 86_400_000;
    let (cap, count, daily) = plan.map(|p| (p.per_charge_cap, p.daily_count_limit, p.daily_amount_limit)).unwrap_or((
        MAX_CHARGE_CNY_FEN,
        i64::from(MAX_DAILY_COUNT),
        0,
    ));
    let months = if row.first_success_ms > 0 { (now_ms - row.first_success_ms) / MONTH_MS } else { 0 };
    Limits {
        per_charge_cap: if cap > 0 { cap } else { MAX_CHARGE_CNY_FEN },
        daily_count: u32::try_from(count).ok().filter(|c| *c > 0).unwrap_or(MAX_DAILY_COUNT),
        daily_amount: if daily > 0 { Some(daily) } else { limits::default_daily_amount(row.total_succeeded, months) },
    }
}

/// The append that issues `issue` — `ChargeScheduled`, or `ChargeRejected` naming the rule
/// and figures when `admitted` is a breach — and whether it was admitted.
pub fn charge_append(
    issue: Issue,
    admitted: Result<(), limits::Breach>,
    reason: ChargeReason,
    description: &str,
    cause: &Cause,
    now: Timestamp,
) -> (StreamAppend, bool) {
    let ok = admitted.is_ok();
    let stream = issue.charge_id.stream();
    let command = match admitted {
        Ok(()) => ChargeCommand::Schedule {
            charge_id: issue.charge_id,
            contract_id: issue.contract_id,
            merchant_id: issue.merchant_id,
            payer_id: issue.payer_id,
            amount: issue.amount,
            period: issue.period,
            due_at: issue.due_at,
        },
        Err(breach) => {
            ChargeCommand::Reject { issue: Some(issue), rule: breach.rule.to_string(), detail: breach.detail }
        }
    };
    // Deciding on a charge that does not exist yet cannot fail for either command.
    let events = charge::decide(&None, command, now).unwrap_or_default();
    let encoded = events
        .iter()
        .filter_map(|e| codec::charge_event_to_pb(None, e))
        .map(|e| codec::encode(codec::with_origin(e, reason, description), cause, now.timestamp_millis()))
        .collect();
    (StreamAppend { stream, expected: ExpectedVersion::NoStream, events: encoded }, ok)
}
