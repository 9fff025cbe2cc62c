//! `scheduler_schedules`: one row per contract, the stored form of its `Schedule` (and its due
//! timer, `wake_ms`). The row is read by column name and converted to and from the typed
//! schedule here, and only here.
use super::Db;
use autodebit_domain::clock::from_millis;
use autodebit_domain::modification::Calendar;
use autodebit_domain::plan::ChargeMode;
use autodebit_domain::schedule::{Change, DayCount, FixedSide, History, Schedule, UsageSide};
use autodebit_domain::{ContractId, Currency, Cycle, MerchantId, Money, PayerId, Timestamp};
use autodebit_eventstore::{BackendKind, EventStore, Tx, Value};
use chrono::{NaiveDate, TimeDelta};
use std::fmt::Write;
use std::sync::LazyLock;

/// A schedule row as stored. Its fields are the table's columns, by name: `COLUMNS` lists
/// them in the order of the fields, so the due loop's JSON arrays (one value for a whole
/// batch of rows) come in that order too.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct ScheduleRow {
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub plan_id: String,
    pub mode: String,
    pub time_zone: String,
    pub amount: i64,
    pub currency: String,
    pub cycle: String,
    pub anchor_ms: i64,
    pub expires_at_ms: i64,
    pub notice_lead_ms: i64,
    pub cycle_anchor_ms: i64,
    pub cycle_anchor_period: i64,
    pub next_period: i64,
    pub next_due_ms: i64,
    pub noticed_period: i64,
    pub ready_ms: i64,
    pub usage_cycle: String,
    pub usage_grace_ms: i64,
    pub usage_period: i64,
    pub usage_end_ms: i64,
    pub usage_noticed: i64,
    pub usage_ready_ms: i64,
    pub change_through: i64,
    pub change_amount: i64,
    pub change_cycle: String,
    pub day_key: String,
    pub day_count: i64,
    pub day_amount: i64,
    pub total_succeeded: i64,
    pub first_success_ms: i64,
    pub succeeded_count: i64,
    pub counted_total: i64,
    pub active: i64,
    pub wake_ms: i64,
    pub rev: i64,
}

/// `ScheduleRow`'s columns, comma-separated, in the order of its fields.
pub static COLUMNS: LazyLock<String> = LazyLock::new(|| super::field_names::<ScheduleRow>().join(", "));

/// `wake_ms` of a schedule without a timer.
const NO_TIMER: i64 = i64::MAX;
/// How `day_key` keeps the charging day.
const DAY_FORMAT: &str = "%Y-%m-%d";

pub fn mode_as_str(mode: ChargeMode) -> &'static str {
    match mode {
        ChargeMode::FixedCycle => "fixed",
        ChargeMode::Usage => "usage",
        ChargeMode::EventTriggered => "event",
        ChargeMode::Hybrid => "hybrid",
    }
}

pub fn mode_from_str(s: &str) -> ChargeMode {
    match s {
        "usage" => ChargeMode::Usage,
        "event" => ChargeMode::EventTriggered,
        "hybrid" => ChargeMode::Hybrid,
        _ => ChargeMode::FixedCycle,
    }
}

pub fn cycle_from_str(s: &str) -> Option<Cycle> {
    Some(match s {
        "daily" => Cycle::Daily,
        "weekly" => Cycle::Weekly,
        "monthly" => Cycle::Monthly,
        "quarterly" => Cycle::Quarterly,
        "yearly" => Cycle::Yearly,
        _ => return None,
    })
}

fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

/// A time kept as milliseconds where 0 means none.
fn optional_ms(t: Option<Timestamp>) -> i64 {
    t.map_or(0, ms)
}

fn optional_at(ms: i64) -> Option<Timestamp> {
    (ms != 0).then(|| from_millis(ms))
}

impl TryFrom<ScheduleRow> for Schedule {
    /// What is wrong with the row.
    type Error = String;

    fn try_from(r: ScheduleRow) -> Result<Schedule, String> {
        r.into_schedule().1
    }
}

impl ScheduleRow {
    /// The typed schedule (or what is wrong with the row), and the key the row is stored under.
    pub fn into_schedule(mut self) -> (String, Result<Schedule, String>) {
        let key = std::mem::take(&mut self.contract_id);
        let schedule = self.typed(&key);
        (key, schedule)
    }

    fn typed(self, contract_id: &str) -> Result<Schedule, String> {
        let r = self;
        let period = |name: &str, v: i64| u32::try_from(v).map_err(|_| format!("{name} {v} is not a period"));
        let cycle = |name: &str, v: &str| cycle_from_str(v).ok_or_else(|| format!("{name} {v:?} is not a cycle"));
        let currency = Currency::parse(&r.currency).map_err(|e| e.to_string())?;
        let mode = mode_from_str(&r.mode);
        let usage = if r.usage_cycle.is_empty() {
            None
        } else {
            Some(UsageSide {
                cycle: cycle("usage_cycle", &r.usage_cycle)?,
                grace: TimeDelta::milliseconds(r.usage_grace_ms),
                period: period("usage_period", r.usage_period)?,
                ends_at: from_millis(r.usage_end_ms),
                noticed: period("usage_noticed", r.usage_noticed)?,
                ready_at: from_millis(r.usage_ready_ms),
            })
        };
        let change = if r.change_through < 0 {
            None
        } else {
            Some(Change {
                through: period("change_through", r.change_through)?,
                amount: Money::new(r.change_amount, currency),
                cycle: cycle("change_cycle", &r.change_cycle)?,
            })
        };
        Ok(Schedule {
            contract_id: ContractId::parse(contract_id).map_err(|e| format!("contract_id: {e}"))?,
            merchant_id: MerchantId::parse(&r.merchant_id).map_err(|e| format!("merchant_id: {e}"))?,
            payer_id: PayerId::parse(&r.payer_id).map_err(|e| format!("payer_id: {e}"))?,
            plan_id: r.plan_id,
            mode,
            zone: autodebit_domain::cycle::zone(&r.time_zone)?,
            amount: Money::new(r.amount, currency),
            signed_at: from_millis(r.anchor_ms),
            expires_at: optional_at(r.expires_at_ms),
            notice_lead: TimeDelta::milliseconds(r.notice_lead_ms),
            fixed: FixedSide {
                calendar: Calendar {
                    cycle: cycle("cycle", &r.cycle)?,
                    anchor: from_millis(r.cycle_anchor_ms),
                    anchor_period: period("cycle_anchor_period", r.cycle_anchor_period)?,
                },
                next_period: period("next_period", r.next_period)?,
                next_due: from_millis(r.next_due_ms),
                noticed_period: period("noticed_period", r.noticed_period)?,
                ready_at: from_millis(r.ready_ms),
            },
            usage,
            change,
            today: DayCount {
                day: NaiveDate::parse_from_str(&r.day_key, DAY_FORMAT).ok(),
                count: u32::try_from(r.day_count).unwrap_or(u32::MAX),
                amount: r.day_amount,
            },
            history: History {
                total_succeeded: r.total_succeeded,
                first_success_at: optional_at(r.first_success_ms),
                succeeded_count: u32::try_from(r.succeeded_count).unwrap_or(u32::MAX),
                counted_total: r.counted_total,
            },
            active: r.active != 0,
            wake: (r.wake_ms != NO_TIMER).then(|| from_millis(r.wake_ms)),
            rev: r.rev,
        })
    }
}

impl From<&Schedule> for ScheduleRow {
    fn from(s: &Schedule) -> ScheduleRow {
        let u = s.usage.as_ref();
        let c = s.change.as_ref();
        ScheduleRow {
            contract_id: s.contract_id.to_string(),
            merchant_id: s.merchant_id.to_string(),
            payer_id: s.payer_id.to_string(),
            plan_id: s.plan_id.clone(),
            mode: mode_as_str(s.mode).to_string(),
            time_zone: s.zone.name().to_string(),
            amount: s.amount.minor_units(),
            currency: s.amount.currency().as_str().to_string(),
            cycle: s.fixed.calendar.cycle.as_str().to_string(),
            anchor_ms: ms(s.signed_at),
            expires_at_ms: optional_ms(s.expires_at),
            notice_lead_ms: s.notice_lead.num_milliseconds(),
            cycle_anchor_ms: ms(s.fixed.calendar.anchor),
            cycle_anchor_period: i64::from(s.fixed.calendar.anchor_period),
            next_period: i64::from(s.fixed.next_period),
            next_due_ms: ms(s.fixed.next_due),
            noticed_period: i64::from(s.fixed.noticed_period),
            ready_ms: ms(s.fixed.ready_at),
            usage_cycle: u.map_or("", |u| u.cycle.as_str()).to_string(),
            usage_grace_ms: u.map_or(0, |u| u.grace.num_milliseconds()),
            usage_period: u.map_or(0, |u| i64::from(u.period)),
            usage_end_ms: u.map_or(0, |u| ms(u.ends_at)),
            usage_noticed: u.map_or(0, |u| i64::from(u.noticed)),
            usage_ready_ms: u.map_or(0, |u| ms(u.ready_at)),
            change_through: c.map_or(-1, |c| i64::from(c.through)),
            change_amount: c.map_or(0, |c| c.amount.minor_units()),
            change_cycle: c.map_or("", |c| c.cycle.as_str()).to_string(),
            day_key: s.today.day.map(|d| d.format(DAY_FORMAT).to_string()).unwrap_or_default(),
            day_count: i64::from(s.today.count),
            day_amount: s.today.amount,
            total_succeeded: s.history.total_succeeded,
            first_success_ms: optional_ms(s.history.first_success_at),
            succeeded_count: i64::from(s.history.succeeded_count),
            counted_total: s.history.counted_total,
            active: i64::from(s.active),
            wake_ms: s.wake.map_or(NO_TIMER, ms),
            rev: s.rev,
        }
    }
}

/// Rows converted, with the key each was stored under (`keys[i]` is `schedules[i]`'s, as the
/// row spells it); an unreadable one is logged and left out, its key kept in `unreadable` (the
/// due loop stops billing it).
pub struct Loaded {
    pub schedules: Vec<Schedule>,
    pub keys: Vec<String>,
    pub unreadable: Vec<String>,
}

fn convert(rows: impl IntoIterator<Item = ScheduleRow>, capacity: usize) -> Loaded {
    let mut loaded =
        Loaded { schedules: Vec::with_capacity(capacity), keys: Vec::with_capacity(capacity), unreadable: Vec::new() };
    for row in rows {
        let (key, schedule) = row.into_schedule();
        match schedule {
            Ok(s) => {
                loaded.schedules.push(s);
                loaded.keys.push(key);
            }
            Err(e) => {
                tracing::error!(contract = key, error = e, "unreadable schedule row");
                loaded.unreadable.push(key);
            }
        }
    }
    loaded
}

/// A contract's schedule; with `lock`, locked for the transaction on PostgreSQL (SQLite's
/// single writer already serialises).
pub async fn get(db: &mut Db<'_>, contract_id: &str, lock: bool) -> anyhow::Result<Option<Schedule>> {
    let lock = if lock && db.kind() == BackendKind::Postgres { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {} FROM scheduler_schedules WHERE contract_id = $1{lock}", *COLUMNS);
    let rows: Vec<ScheduleRow> = db.query_as(&sql, &[Value::from(contract_id)]).await?;
    Ok(match rows.into_iter().next() {
        Some(row) => Some(Schedule::try_from(row).map_err(|e| anyhow::anyhow!("schedule of {contract_id}: {e}"))?),
        None => None,
    })
}

/// Whether any active schedule's timer has passed by `now` (on a reader: an idle scheduler
/// never takes the write lock).
pub async fn any_due(store: &EventStore, now: Timestamp) -> anyhow::Result<bool> {
    let found = store
        .query("SELECT 1 FROM scheduler_schedules WHERE active = 1 AND wake_ms <= $1 LIMIT 1", &[Value::Int(ms(now))])
        .await?;
    Ok(!found.is_empty())
}

#[derive(sqlx::FromRow)]
struct Batch {
    rows: Option<String>,
}

/// Claims up to `limit` schedules whose timer has passed, earliest first. PostgreSQL locks
/// them (`SKIP LOCKED`: other schedulers take the rest); SQLite's single writer already holds
/// the database. Both hand the rows over as one JSON value of `COLUMNS` arrays: decoding a
/// thousand rows of thirty columns value by value costs more than the rest of the claim.
pub async fn claim(tx: &mut Tx, now: Timestamp, limit: i64) -> anyhow::Result<Loaded> {
    let columns = &*COLUMNS;
    let due = format!(
        "SELECT {columns} FROM scheduler_schedules WHERE active = 1 AND wake_ms <= $1 ORDER BY wake_ms LIMIT $2"
    );
    let sql = match tx.kind() {
        BackendKind::Sqlite => format!("SELECT json_group_array(json_array({columns})) AS rows FROM ({due})"),
        // Locked in the subquery, handed over as one JSON value like SQLite's.
        BackendKind::Postgres => format!(
            "SELECT CAST(json_agg(json_build_array({columns})) AS TEXT) AS rows FROM ({due} FOR UPDATE SKIP LOCKED) d"
        ),
    };
    let found: Vec<Batch> = tx.query_as(&sql, &[Value::Int(ms(now)), Value::Int(limit)]).await?;
    let rows: Vec<ScheduleRow> = match found.into_iter().next().and_then(|b| b.rows) {
        Some(text) => serde_json::from_str(&text)?,
        None => Vec::new(),
    };
    let n = rows.len();
    Ok(convert(rows, n))
}

/// Up to `limit` due schedules after `after` (`wake_ms`, rowid) in that order, read without
/// locks (SQLite), and where the last one stands. Two index seeks: the rest of `after`'s wake
/// moment, then the later ones (a row-value comparison would scan every row of an equal wake).
pub async fn read_due(
    store: &EventStore,
    now: Timestamp,
    after: (i64, i64),
    limit: i64,
) -> anyhow::Result<(Loaded, Option<(i64, i64)>)> {
    let columns = &*COLUMNS;
    let found: Vec<Batch> = store
        .query_as(
            &format!(
                "SELECT json_group_array(json_array(json_array({columns}), rid)) AS rows FROM (
                   SELECT * FROM (SELECT {columns}, rowid AS rid FROM scheduler_schedules
                     WHERE active = 1 AND wake_ms = $2 AND rowid > $3 ORDER BY rowid LIMIT $4)
                   UNION ALL
                   SELECT * FROM (SELECT {columns}, rowid AS rid FROM scheduler_schedules
                     WHERE active = 1 AND wake_ms > $2 AND wake_ms <= $1 ORDER BY wake_ms, rowid LIMIT $4)
                   LIMIT $4)"
            ),
            &[Value::Int(ms(now)), Value::Int(after.0), Value::Int(after.1), Value::Int(limit)],
        )
        .await?;
    let rows: Vec<(ScheduleRow, i64)> = match found.into_iter().next().and_then(|b| b.rows) {
        Some(text) => serde_json::from_str(&text)?,
        None => Vec::new(),
    };
    let last = rows.iter().map(|(row, rid)| (row.wake_ms, *rid)).max();
    let n = rows.len();
    Ok((convert(rows.into_iter().map(|(row, _)| row), n), last))
}

/// Writes a batch of schedules' new state back in one statement, the rows passed as one JSON
/// parameter (SQLite binds many parameters in quadratic time; PostgreSQL spends less on one
/// long value than on thousands of binds). Only the columns the due loop can have changed:
/// the usage state only if the batch has metered schedules. With `checked`, a row is written
/// only where still at the revision it was read at. Returns how many rows were written.
pub async fn save_advanced(tx: &mut Tx, schedules: &[Schedule], keys: &[String], checked: bool) -> anyhow::Result<u64> {
    // The columns written after the id and the wake, in the order the values come, and
    // whether each is text.
    const WRITTEN: [(&str, bool); 16] = [
        ("next_period", false),
        ("next_due_ms", false),
        ("noticed_period", false),
        ("ready_ms", false),
        ("usage_period", false),
        ("usage_end_ms", false),
        ("usage_noticed", false),
        ("usage_ready_ms", false),
        ("day_key", true),
        ("day_count", false),
        ("day_amount", false),
        // A change of terms taking effect.
        ("amount", false),
        ("cycle", true),
        ("cycle_anchor_ms", false),
        ("cycle_anchor_period", false),
        ("change_through", false),
    ];
    if schedules.is_empty() {
        return Ok(0);
    }
    let metered = schedules.iter().any(|s| s.mode.metered());
    let written: Vec<(&str, bool)> =
        WRITTEN.iter().copied().filter(|(c, _)| metered || !c.starts_with("usage_")).collect();
    let mut json = String::with_capacity(schedules.len() * 160);
    json.push('[');
    for (i, (s, key)) in schedules.iter().zip(keys).enumerate() {
        if i > 0 {
            json.push(',');
        }
        let f = &s.fixed;
        // A wake of -1: nothing left to do.
        let wake = if s.active { s.wake.map_or(NO_TIMER, ms) } else { -1 };
        let _ = write!(
            json,
            "[\"{key}\",{wake},{},{},{},{}",
            f.next_period,
            ms(f.next_due),
            f.noticed_period,
            ms(f.ready_at)
        );
        if metered {
            let (period, ends, noticed, ready) =
                s.usage.map_or((0, 0, 0, 0), |u| (u.period, ms(u.ends_at), u.noticed, ms(u.ready_at)));
            let _ = write!(json, ",{period},{ends},{noticed},{ready}");
        }
        json.push_str(",\"");
        if let Some(day) = s.today.day {
            let _ = write!(json, "{}", day.format(DAY_FORMAT));
        }
        let _ = write!(
            json,
            "\",{},{},{},\"{}\",{},{},{},{}]",
            s.today.count,
            s.today.amount,
            s.amount.minor_units(),
            f.calendar.cycle.as_str(),
            ms(f.calendar.anchor),
            f.calendar.anchor_period,
            s.change.map_or(-1, |c| i64::from(c.through)),
            s.rev
        );
    }
    json.push(']');
    let mut cols = vec!["value->>0 AS id".to_string(), "CAST(value->>1 AS BIGINT) AS wk".to_string()];
    for (i, (c, text)) in written.iter().enumerate() {
        cols.push(if *text {
            format!("value->>{} AS {c}", i + 2)
        } else {
            format!("CAST(value->>{} AS BIGINT) AS {c}", i + 2)
        });
    }
    cols.push(format!("CAST(value->>{} AS BIGINT) AS rev", written.len() + 2));
    let set = written.iter().map(|(c, _)| format!("{c} = v.{c}")).collect::<Vec<_>>().join(", ");
    let check = if checked { " AND scheduler_schedules.rev = v.rev" } else { "" };
    let saved = tx
        .execute(
            &format!(
                "UPDATE scheduler_schedules SET {set},
               wake_ms = CASE WHEN v.wk < 0 THEN scheduler_schedules.wake_ms ELSE v.wk END,
               active = CASE WHEN v.wk < 0 THEN 0 ELSE scheduler_schedules.active END,
               rev = scheduler_schedules.rev + 1
             FROM (SELECT {} FROM {}) v
             WHERE scheduler_schedules.contract_id = v.id{check}",
                cols.join(", "),
                tx.kind().json_rows(1)
            ),
            &[Value::from(json)],
        )
        .await?;
    Ok(saved)
}

/// A new schedule; nothing when the contract has one already.
pub async fn insert(tx: &mut Tx, s: &Schedule) -> anyhow::Result<()> {
    let r = ScheduleRow::from(s);
    tx.execute(
        "INSERT INTO scheduler_schedules
           (contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, next_due_ms,
            active, plan_id, expires_at_ms, mode, time_zone, notice_lead_ms, usage_cycle, usage_grace_ms,
            usage_period, usage_end_ms, wake_ms, cycle_anchor_ms, cycle_anchor_period)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)
         ON CONFLICT (contract_id) DO NOTHING",
        &[
            Value::from(r.contract_id),
            Value::from(r.merchant_id),
            Value::from(r.payer_id),
            Value::Int(r.amount),
            Value::from(r.currency),
            Value::from(r.cycle),
            Value::Int(r.anchor_ms),
            Value::Int(r.next_period),
            Value::Int(r.next_due_ms),
            Value::Int(r.active),
            Value::from(r.plan_id),
            Value::Int(r.expires_at_ms),
            Value::from(r.mode),
            Value::from(r.time_zone),
            Value::Int(r.notice_lead_ms),
            Value::from(r.usage_cycle),
            Value::Int(r.usage_grace_ms),
            Value::Int(r.usage_period),
            Value::Int(r.usage_end_ms),
            Value::Int(r.wake_ms),
            Value::Int(r.cycle_anchor_ms),
            Value::Int(r.cycle_anchor_period),
        ],
    )
    .await?;
    Ok(())
}

/// Writes a schedule's terms and position (a modification, a resumption) and its wake.
pub async fn save_terms(tx: &mut Tx, s: &Schedule) -> anyhow::Result<()> {
    let r = ScheduleRow::from(s);
    tx.execute(
        "UPDATE scheduler_schedules SET amount = $1, currency = $2, cycle = $3, cycle_anchor_ms = $4,
           cycle_anchor_period = $5, next_period = $6, next_due_ms = $7, change_through = $8, change_amount = $9,
           change_cycle = $10, active = $11, wake_ms = $12, rev = rev + 1
         WHERE contract_id = $13",
        &[
            Value::Int(r.amount),
            Value::from(r.currency),
            Value::from(r.cycle),
            Value::Int(r.cycle_anchor_ms),
            Value::Int(r.cycle_anchor_period),
            Value::Int(r.next_period),
            Value::Int(r.next_due_ms),
            Value::Int(r.change_through),
            Value::Int(r.change_amount),
            Value::from(r.change_cycle),
            Value::Int(r.active),
            Value::Int(r.wake_ms),
            Value::from(r.contract_id),
        ],
    )
    .await?;
    Ok(())
}

/// Saves the contract's count and total for the day, as the schedule counts them.
pub async fn save_today(tx: &mut Tx, s: &Schedule) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE scheduler_schedules SET day_key = $1, day_count = $2, day_amount = $3, rev = rev + 1
         WHERE contract_id = $4",
        &[
            Value::from(s.today.day.map(|d| d.format(DAY_FORMAT).to_string()).unwrap_or_default()),
            Value::Int(i64::from(s.today.count)),
            Value::Int(s.today.amount),
            Value::from(s.contract_id.to_string()),
        ],
    )
    .await?;
    Ok(())
}

/// Raises a schedule's revision: something it depends on changed (usage in its open period),
/// so a due batch decided on the old state is voided.
pub async fn touch(tx: &mut Tx, contract_id: &str) -> anyhow::Result<()> {
    tx.execute("UPDATE scheduler_schedules SET rev = rev + 1 WHERE contract_id = $1", &[Value::from(contract_id)])
        .await?;
    Ok(())
}

/// The contracts stop billing.
pub async fn stop(tx: &mut Tx, contract_ids: &[&str]) -> anyhow::Result<()> {
    if contract_ids.is_empty() {
        return Ok(());
    }
    let (list, params) = super::in_list(tx.kind(), 1, contract_ids);
    tx.execute(
        &format!("UPDATE scheduler_schedules SET active = 0, rev = rev + 1 WHERE contract_id IN {list}"),
        &params,
    )
    .await?;
    Ok(())
}

/// Adds successes to their schedules' totals in one statement: per contract, the sum of its
/// amounts, how many, and the time of its first success (in log order) if it had none.
pub async fn record_successes(tx: &mut Tx, successes: Vec<(&str, i64, i64)>) -> anyhow::Result<()> {
    if successes.is_empty() {
        return Ok(());
    }
    let mut per_contract: Vec<(&str, i64, i64, i64)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (id, amount, at) in successes {
        match index.get(id) {
            Some(&i) => {
                per_contract[i].1 += amount;
                per_contract[i].3 += 1;
            }
            None => {
                index.insert(id, per_contract.len());
                per_contract.push((id, amount, at, 1));
            }
        }
    }
    let rows: Vec<serde_json::Value> =
        per_contract.into_iter().map(|(id, amount, at, n)| serde_json::json!([id, amount, at, n])).collect();
    tx.execute(
        &format!(
            "UPDATE scheduler_schedules SET total_succeeded = total_succeeded + v.amount, rev = rev + 1,
               succeeded_count = succeeded_count + v.n, counted_total = counted_total + v.amount,
               first_success_ms = CASE WHEN first_success_ms = 0 THEN v.at ELSE first_success_ms END
             FROM (SELECT value->>0 AS id, CAST(value->>1 AS BIGINT) AS amount, CAST(value->>2 AS BIGINT) AS at,
                          CAST(value->>3 AS BIGINT) AS n
                   FROM {}) v
             WHERE scheduler_schedules.contract_id = v.id",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Counts {
    active: i64,
    due: i64,
}

/// How many schedules are active, and how many of those have a timer passed by `now`.
pub async fn status(store: &EventStore, now: Timestamp) -> anyhow::Result<(u64, u64)> {
    let found: Vec<Counts> = store
        .query_as(
            "SELECT COUNT(*) AS active, COALESCE(SUM(CASE WHEN wake_ms <= $1 THEN 1 ELSE 0 END), 0) AS due
             FROM scheduler_schedules WHERE active = 1",
            &[Value::Int(ms(now))],
        )
        .await?;
    Ok(found.first().map_or((0, 0), |c| (c.active.max(0) as u64, c.due.max(0) as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_the_fields_of_the_row() {
        assert!(COLUMNS.starts_with("contract_id, merchant_id, payer_id, plan_id, "));
        assert!(COLUMNS.ends_with(", active, wake_ms, rev"));
        assert_eq!(COLUMNS.split(", ").count(), 37);
    }
}
