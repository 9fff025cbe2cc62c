//! Issuing a charge, shared by the due loop and TriggerCharge: the limits of the contract's
//! plan against what it was charged today (in its merchant's calendar), checked and recorded
//! in the transaction that appends the charge, so no two charges can both take the last slot.
use crate::store::{PLAN_COLUMNS, PlanRow, ScheduleRow, placeholders};
use autodebit_domain::MAX_CHARGE_CNY_FEN;
use autodebit_domain::charge::{self, ChargeCommand, Issue};
use autodebit_domain::limits::{self, Limits, Today};
use autodebit_domain::plan::MAX_DAILY_COUNT;
use autodebit_domain::{Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StreamAppend, Tx, Value};
use autodebit_proto::events::v1::ChargeReason;
use autodebit_runtime::codec::{self, Cause};
use std::collections::HashMap;

/// The plans named by `rows`, by id.
pub async fn load_plans(tx: &mut Tx, rows: &[&ScheduleRow]) -> anyhow::Result<HashMap<String, PlanRow>> {
    let mut ids: Vec<&str> = rows.iter().map(|r| r.plan_id.as_str()).filter(|p| !p.is_empty()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut plans = HashMap::new();
    if ids.is_empty() {
        return Ok(plans);
    }
    let found = tx
        .query(
            &format!("SELECT {PLAN_COLUMNS} FROM scheduler_plans WHERE plan_id IN ({})", placeholders(1, ids.len())),
            &ids.iter().map(|p| Value::from(*p)).collect::<Vec<_>>(),
        )
        .await?;
    plans.extend(found.iter().filter_map(PlanRow::from_row));
    Ok(plans)
}

/// The calendar day `at` falls on for a contract, in its merchant's zone.
pub fn day_of(row: &ScheduleRow, at: Timestamp) -> String {
    let tz = autodebit_domain::cycle::zone(&row.time_zone).unwrap_or(chrono_tz::Asia::Shanghai);
    at.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// What each of `rows` was charged on its day of `now`.
pub struct Ledger {
    now: Timestamp,
    today: HashMap<(String, String), Today>,
    /// Charges issued in this transaction, to record.
    issued: HashMap<(String, String), Today>,
}

impl Ledger {
    pub async fn load(tx: &mut Tx, rows: &[&ScheduleRow], now: Timestamp) -> anyhow::Result<Self> {
        let mut ledger = Ledger { now, today: HashMap::new(), issued: HashMap::new() };
        if rows.is_empty() {
            return Ok(ledger);
        }
        let mut days: Vec<String> = rows.iter().map(|r| day_of(r, now)).collect();
        days.sort_unstable();
        days.dedup();
        let mut params: Vec<Value> = days.iter().map(Value::from).collect();
        params.extend(rows.iter().map(|r| Value::from(&r.contract_id)));
        let found = tx
            .query(
                &format!(
                    "SELECT contract_id, day, count, amount FROM scheduler_daily
                     WHERE day IN ({}) AND contract_id IN ({})",
                    placeholders(1, days.len()),
                    placeholders(days.len() + 1, rows.len())
                ),
                &params,
            )
            .await?;
        for r in &found {
            if let (Some(id), Some(day), Some(count), Some(amount)) = (r.text(0), r.text(1), r.i64(2), r.i64(3)) {
                let today = Today { count: u32::try_from(count).unwrap_or(u32::MAX), amount };
                ledger.today.insert((id.to_string(), day.to_string()), today);
            }
        }
        Ok(ledger)
    }

    /// Checks `amount` against the contract's limits; on success counts it as charged today.
    pub fn admit(&mut self, row: &ScheduleRow, plan: Option<&PlanRow>, amount: Money) -> Result<(), limits::Breach> {
        let key = (row.contract_id.clone(), day_of(row, self.now));
        let used = self.today.entry(key.clone()).or_default();
        limits::check(amount, &limits_of(row, plan, self.now.timestamp_millis()), *used)?;
        used.count += 1;
        used.amount += amount.minor_units();
        let issued = self.issued.entry(key).or_default();
        issued.count += 1;
        issued.amount += amount.minor_units();
        Ok(())
    }

    /// Writes what this transaction charged: one statement for the whole batch.
    pub async fn save(self, tx: &mut Tx) -> anyhow::Result<()> {
        if self.issued.is_empty() {
            return Ok(());
        }
        let mut params = Vec::with_capacity(self.issued.len() * 4);
        let mut values = Vec::with_capacity(self.issued.len());
        for (i, ((contract, day), t)) in self.issued.into_iter().enumerate() {
            values.push(format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4));
            params.extend([
                Value::from(contract),
                Value::from(day),
                Value::Int(i64::from(t.count)),
                Value::Int(t.amount),
            ]);
        }
        tx.execute(
            &format!(
                "INSERT INTO scheduler_daily (contract_id, day, count, amount) VALUES {}
                 ON CONFLICT (contract_id, day) DO UPDATE SET count = scheduler_daily.count + excluded.count,
                   amount = scheduler_daily.amount + excluded.amount",
                values.join(", ")
            ),
            &params,
        )
        .await?;
        Ok(())
    }
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
