//! The scheduler's own table: one billing schedule per contract, which is also its due timer.
use autodebit_domain::Cycle;
use autodebit_eventstore::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration::common(
        1,
        "CREATE TABLE scheduler_schedules (
        contract_id  TEXT   PRIMARY KEY,
        merchant_id  TEXT   NOT NULL,
        payer_id     TEXT   NOT NULL,
        amount       BIGINT NOT NULL,
        currency     TEXT   NOT NULL,
        cycle        TEXT   NOT NULL,
        anchor_ms    BIGINT NOT NULL,
        next_period  BIGINT NOT NULL,
        next_due_ms  BIGINT NOT NULL,
        active       BIGINT NOT NULL
    );
    CREATE INDEX scheduler_schedules_due ON scheduler_schedules (active, next_due_ms);",
    ),
    // Limits: each contract's plan, what it was charged per day, and its history.
    Migration::common(
        2,
        "ALTER TABLE scheduler_schedules ADD COLUMN plan_id TEXT NOT NULL DEFAULT '';
        ALTER TABLE scheduler_schedules ADD COLUMN expires_at_ms BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE scheduler_schedules ADD COLUMN total_succeeded BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE scheduler_schedules ADD COLUMN first_success_ms BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE scheduler_plans (
            plan_id                 TEXT   PRIMARY KEY,
            per_charge_cap          BIGINT NOT NULL,
            daily_count_limit       BIGINT NOT NULL,
            daily_amount_limit      BIGINT NOT NULL,
            first_charge_at_signing BIGINT NOT NULL
        );
        CREATE TABLE scheduler_daily (
            contract_id TEXT   NOT NULL,
            day         TEXT   NOT NULL,
            count       BIGINT NOT NULL,
            amount      BIGINT NOT NULL,
            PRIMARY KEY (contract_id, day)
        );",
    ),
    // Retries: the plan's gaps, and one durable timer per failed charge awaiting its next attempt.
    Migration::common(
        3,
        "ALTER TABLE scheduler_plans ADD COLUMN retry_gaps TEXT NOT NULL DEFAULT '';
        CREATE TABLE scheduler_retries (
            charge_id      TEXT   PRIMARY KEY,
            contract_id    TEXT   NOT NULL,
            stream_version BIGINT NOT NULL,
            due_ms         BIGINT NOT NULL,
            state          TEXT   NOT NULL
        );
        CREATE INDEX scheduler_retries_due ON scheduler_retries (state, due_ms);",
    ),
];

pub const COLUMNS: &str = "contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, \
                           next_due_ms, active, plan_id, expires_at_ms, total_succeeded, first_success_ms";

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

/// A schedule row as read.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub amount: i64,
    pub currency: String,
    pub cycle: String,
    pub anchor_ms: i64,
    pub next_period: i64,
    pub next_due_ms: i64,
    pub active: bool,
    pub plan_id: String,
    /// End of the contract's validity; 0 when none.
    pub expires_at_ms: i64,
    /// Sum of the contract's successful charges, and when the first one was.
    pub total_succeeded: i64,
    pub first_success_ms: i64,
}

impl ScheduleRow {
    /// From a row selected with `COLUMNS`.
    pub fn from_row(r: &autodebit_eventstore::Row) -> Option<Self> {
        Some(ScheduleRow {
            contract_id: r.text(0)?.to_string(),
            merchant_id: r.text(1)?.to_string(),
            payer_id: r.text(2)?.to_string(),
            amount: r.i64(3)?,
            currency: r.text(4)?.to_string(),
            cycle: r.text(5)?.to_string(),
            anchor_ms: r.i64(6)?,
            next_period: r.i64(7)?,
            next_due_ms: r.i64(8)?,
            active: r.i64(9)? != 0,
            plan_id: r.text(10)?.to_string(),
            expires_at_ms: r.i64(11)?,
            total_succeeded: r.i64(12)?,
            first_success_ms: r.i64(13)?,
        })
    }
}

/// `$from, $from+1, …` for `n` values, for IN lists.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
