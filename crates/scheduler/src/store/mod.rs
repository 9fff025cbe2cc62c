//! The scheduler's tables and every statement on them: the schedules (`schedules`), and the
//! plans, merchants, usage, retries and held charges it keeps from the log and its calls.
//! The tables themselves are created by the migrations in `migrations/`.
pub mod decisions;
pub mod holds;
pub mod payers;
pub mod schedules;

use autodebit_domain::limits::PlanLimits;
use autodebit_domain::plan::ModificationRule;
use autodebit_domain::usage::{PriceTier, UsagePricing};
use autodebit_domain::{ChargeId, Cycle, Timestamp};
use autodebit_eventstore::{BackendKind, EventStore, FromRow, Migrations, Tx, Value};
use std::collections::{HashMap, HashSet};

pub use schedules::{COLUMNS, ScheduleRow};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("scheduler", 2000..3000);

/// The field names of a struct that derives `serde::Deserialize`, in order: serde hands them
/// to `deserialize_struct`, which is all this deserializer answers.
pub(crate) fn field_names<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value};
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Names<'_> {
        type Error = value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, value::Error> {
            Err(value::Error::custom("only a struct's field names are read"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, value::Error> {
            *self.0 = fields;
            Err(value::Error::custom("only a struct's field names are read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}

pub(crate) use autodebit_runtime::sql::Query;

/// Where a read goes: inside a write transaction (seeing its own changes, holding its locks)
/// or to a reader connection.
pub enum Db<'a> {
    Tx(&'a mut Tx),
    Store(&'a EventStore),
}

impl Db<'_> {
    pub fn kind(&self) -> BackendKind {
        match self {
            Db::Tx(tx) => tx.kind(),
            Db::Store(store) => store.kind(),
        }
    }

    pub async fn query_as<T: FromRow>(&mut self, sql: &str, params: &[Value]) -> autodebit_eventstore::Result<Vec<T>> {
        match self {
            Db::Tx(tx) => tx.query_as(sql, params).await,
            Db::Store(store) => store.query_as(sql, params).await,
        }
    }

    pub async fn read_stream(
        &mut self,
        stream: &str,
        after_version: u64,
    ) -> autodebit_eventstore::Result<Vec<autodebit_eventstore::RecordedEvent>> {
        match self {
            Db::Tx(tx) => tx.read_stream(stream, after_version).await,
            Db::Store(store) => store.read_stream(stream, after_version).await,
        }
    }
}

/// `$from, $from+1, …` for `n` values, for IN lists.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The right-hand side of `x IN …` for `items`, its parameters numbered from `from`. SQLite
/// gets one JSON array parameter (`json_each`): binding a thousand parameters by name costs it
/// quadratic time. PostgreSQL gets a plain list.
fn in_list(kind: BackendKind, from: usize, items: &[&str]) -> (String, Vec<Value>) {
    match kind {
        BackendKind::Sqlite => {
            let json: Vec<String> =
                items.iter().map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\""))).collect();
            (format!("(SELECT value FROM json_each(${from}))"), vec![Value::from(format!("[{}]", json.join(",")))])
        }
        BackendKind::Postgres => {
            (format!("({})", placeholders(from, items.len())), items.iter().map(|i| Value::from(*i)).collect())
        }
    }
}

fn ms(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

// ---- plans ----------------------------------------------------------------------------------

/// A plan's terms as the scheduler keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRecord {
    pub plan_id: String,
    pub merchant_id: String,
    pub limits: PlanLimits,
    pub first_charge_at_signing: bool,
    pub retry_gaps_hours: Vec<u32>,
    pub mode: autodebit_domain::plan::ChargeMode,
    pub notice_lead_hours: u32,
    pub usage: UsagePricing,
    pub modification_rule: ModificationRule,
}

/// A plan's modification rule as `scheduler_plans` keeps it.
fn rule_as_str(rule: ModificationRule) -> &'static str {
    match rule {
        ModificationRule::Immediately => "immediately",
        ModificationRule::NextCycle => "next_cycle",
    }
}

fn rule_from_str(s: &str) -> ModificationRule {
    if s == "immediately" { ModificationRule::Immediately } else { ModificationRule::NextCycle }
}

/// Tiers as `usage_tiers` keeps them: `up_to:unit_price` pairs joined by `,`; `up_to` 0 is
/// unbounded.
fn tiers_to_str(tiers: &[PriceTier]) -> String {
    tiers.iter().map(|t| format!("{}:{}", t.up_to.unwrap_or(0), t.unit_price)).collect::<Vec<_>>().join(",")
}

fn tiers_from_str(s: &str) -> Option<Vec<PriceTier>> {
    s.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (up, price) = t.split_once(':')?;
            let up: u64 = up.parse().ok()?;
            Some(PriceTier { up_to: (up > 0).then_some(up), unit_price: price.parse().ok()? })
        })
        .collect()
}

/// Keeps a plan; a plan once kept does not change.
pub async fn insert_plan(tx: &mut Tx, p: &PlanRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_plans
           (plan_id, per_charge_cap, daily_count_limit, daily_amount_limit, first_charge_at_signing,
            retry_gaps, mode, notice_lead_hours, usage_unit, usage_tiers, usage_grace_minutes, usage_cycle,
            modification_rule, merchant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (plan_id) DO NOTHING",
        &[
            Value::from(&p.plan_id),
            Value::Int(p.limits.per_charge_cap.unwrap_or(0)),
            Value::Int(i64::from(p.limits.daily_count.unwrap_or(0))),
            Value::Int(p.limits.daily_amount.unwrap_or(0)),
            Value::from(p.first_charge_at_signing),
            Value::from(p.retry_gaps_hours.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")),
            Value::from(schedules::mode_as_str(p.mode)),
            Value::Int(i64::from(p.notice_lead_hours)),
            Value::from(&p.usage.unit),
            Value::from(tiers_to_str(&p.usage.tiers)),
            Value::Int(i64::from(p.usage.grace_minutes)),
            Value::from(p.usage.cycle.as_str()),
            Value::from(rule_as_str(p.modification_rule)),
            Value::from(&p.merchant_id),
        ],
    )
    .await?;
    Ok(())
}

/// Whether the scheduler knows the merchant.
pub async fn merchant_known(db: &mut Db<'_>, merchant_id: &str) -> anyhow::Result<bool> {
    #[derive(sqlx::FromRow)]
    struct One {
        n: i64,
    }
    let found: Vec<One> = db
        .query_as("SELECT COUNT(*) AS n FROM scheduler_merchants WHERE merchant_id = $1", &[Value::from(merchant_id)])
        .await?;
    Ok(found.first().is_some_and(|o| o.n > 0))
}

/// The merchant a plan is, if the scheduler knows the plan.
pub async fn plan_merchant(db: &mut Db<'_>, plan_id: &str) -> anyhow::Result<Option<String>> {
    #[derive(sqlx::FromRow)]
    struct Owner {
        merchant_id: String,
    }
    let found: Vec<Owner> =
        db.query_as("SELECT merchant_id FROM scheduler_plans WHERE plan_id = $1", &[Value::from(plan_id)]).await?;
    Ok(found.into_iter().next().map(|o| o.merchant_id))
}

/// The risk rule settings at the scopes of `merchants` and `plans` (and the platform's).
pub async fn risk_rules(
    db: &mut Db<'_>,
    merchants: &[&str],
    plans: &[&str],
) -> anyhow::Result<autodebit_runtime::risk_rules::Values> {
    let (sql, params) = autodebit_runtime::risk_rules::select("scheduler_risk_rules", merchants, plans);
    let rows: Vec<autodebit_runtime::risk_rules::Row> = db.query_as(&sql, &params).await?;
    Ok(autodebit_runtime::risk_rules::Values::from_rows(rows))
}

/// What a plan says about the charges of a contract signed against it.
#[derive(Debug, Clone)]
pub struct PlanCharges {
    pub limits: PlanLimits,
    /// How usage is priced; `None` when the plan prices none.
    pub pricing: Option<UsagePricing>,
}

#[derive(sqlx::FromRow)]
struct PlanChargesRow {
    plan_id: String,
    per_charge_cap: i64,
    daily_count_limit: i64,
    daily_amount_limit: i64,
    usage_unit: String,
    usage_tiers: String,
}

/// The limits and pricing of the plans among `plan_ids`, by id.
pub async fn plan_charges(db: &mut Db<'_>, plan_ids: &[&str]) -> anyhow::Result<HashMap<String, PlanCharges>> {
    let mut ids: Vec<&str> = plan_ids.iter().copied().filter(|p| !p.is_empty()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, params) = in_list(db.kind(), 1, &ids);
    let found: Vec<PlanChargesRow> = db
        .query_as(
            &format!(
                "SELECT plan_id, per_charge_cap, daily_count_limit, daily_amount_limit, usage_unit, usage_tiers
                 FROM scheduler_plans WHERE plan_id IN {list}"
            ),
            &params,
        )
        .await?;
    Ok(found
        .into_iter()
        .map(|r| {
            let pricing = tiers_from_str(&r.usage_tiers).filter(|t| !t.is_empty()).map(|tiers| UsagePricing {
                unit: r.usage_unit.clone(),
                tiers,
                grace_minutes: 0,
                cycle: Cycle::Monthly,
            });
            let plan = PlanCharges {
                limits: PlanLimits {
                    per_charge_cap: Some(r.per_charge_cap),
                    daily_count: u32::try_from(r.daily_count_limit).ok(),
                    daily_amount: Some(r.daily_amount_limit),
                },
                pricing,
            };
            (r.plan_id, plan)
        })
        .collect())
}

/// The usage unit of a plan ("" when it has none).
pub async fn plan_usage_unit(db: &mut Db<'_>, plan_id: &str) -> anyhow::Result<String> {
    #[derive(sqlx::FromRow)]
    struct Unit {
        usage_unit: String,
    }
    let found: Vec<Unit> =
        db.query_as("SELECT usage_unit FROM scheduler_plans WHERE plan_id = $1", &[Value::from(plan_id)]).await?;
    Ok(found.into_iter().next().map(|u| u.usage_unit).unwrap_or_default())
}

/// What a plan says about a schedule opened for a contract signed against it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanOpening {
    pub first_charge_at_signing: i64,
    pub mode: String,
    pub notice_lead_hours: i64,
    pub usage_grace_minutes: i64,
    pub usage_cycle: String,
}

pub async fn plan_opening(tx: &mut Tx, plan_id: &str) -> anyhow::Result<Option<PlanOpening>> {
    let found: Vec<PlanOpening> = tx
        .query_as(
            "SELECT first_charge_at_signing, mode, notice_lead_hours, usage_grace_minutes, usage_cycle
             FROM scheduler_plans WHERE plan_id = $1",
            &[Value::from(plan_id)],
        )
        .await?;
    Ok(found.into_iter().next())
}

/// A plan's modification rule (the default rule for a plan not known).
pub async fn modification_rule(tx: &mut Tx, plan_id: &str) -> anyhow::Result<ModificationRule> {
    #[derive(sqlx::FromRow)]
    struct Rule {
        modification_rule: String,
    }
    let found: Vec<Rule> = tx
        .query_as("SELECT modification_rule FROM scheduler_plans WHERE plan_id = $1", &[Value::from(plan_id)])
        .await?;
    Ok(found.first().map_or(ModificationRule::NextCycle, |r| rule_from_str(&r.modification_rule)))
}

/// The retry gaps, in hours, of a contract's plan.
pub async fn retry_gaps(tx: &mut Tx, contract_id: &str) -> anyhow::Result<Vec<u32>> {
    #[derive(sqlx::FromRow)]
    struct Gaps {
        retry_gaps: String,
    }
    let found: Vec<Gaps> = tx
        .query_as(
            "SELECT p.retry_gaps FROM scheduler_schedules s JOIN scheduler_plans p ON p.plan_id = s.plan_id
             WHERE s.contract_id = $1",
            &[Value::from(contract_id)],
        )
        .await?;
    Ok(found
        .first()
        .map(|g| g.retry_gaps.split(',').filter_map(|g| g.trim().parse().ok()).collect())
        .unwrap_or_default())
}

// ---- merchants ------------------------------------------------------------------------------

pub async fn insert_merchant(tx: &mut Tx, merchant_id: &str, time_zone: &str) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_merchants (merchant_id, time_zone) VALUES ($1, $2)
         ON CONFLICT (merchant_id) DO NOTHING",
        &[Value::from(merchant_id), Value::from(time_zone)],
    )
    .await?;
    Ok(())
}

pub async fn set_merchant_suspended(tx: &mut Tx, merchant_id: &str, suspended: bool) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE scheduler_merchants SET suspended = $1 WHERE merchant_id = $2",
        &[Value::from(suspended), Value::from(merchant_id)],
    )
    .await?;
    Ok(())
}

/// A merchant's time zone, if the scheduler knows the merchant.
pub async fn merchant_zone(tx: &mut Tx, merchant_id: &str) -> anyhow::Result<Option<String>> {
    #[derive(sqlx::FromRow)]
    struct Zone {
        time_zone: String,
    }
    let found: Vec<Zone> = tx
        .query_as("SELECT time_zone FROM scheduler_merchants WHERE merchant_id = $1", &[Value::from(merchant_id)])
        .await?;
    Ok(found.into_iter().next().map(|z| z.time_zone))
}

/// The merchants among `ids` that are suspended.
pub async fn suspended_merchants(db: &mut Db<'_>, ids: &[&str]) -> anyhow::Result<HashSet<String>> {
    merchants_where(db, ids, "suspended = 1").await
}

/// Those of `ids` whose charging is frozen (by a complaint or by their credit score).
pub async fn frozen_merchants(db: &mut Db<'_>, ids: &[&str]) -> anyhow::Result<HashSet<String>> {
    merchants_where(db, ids, "(frozen = 1 OR credit_frozen = 1)").await
}

/// Those of `ids` whose `scheduler_merchants` row meets `condition`.
async fn merchants_where(db: &mut Db<'_>, ids: &[&str], condition: &str) -> anyhow::Result<HashSet<String>> {
    #[derive(sqlx::FromRow)]
    struct Merchant {
        merchant_id: String,
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let (list, params) = in_list(db.kind(), 1, &ids);
    let found: Vec<Merchant> = db
        .query_as(
            &format!("SELECT merchant_id FROM scheduler_merchants WHERE {condition} AND merchant_id IN {list}"),
            &params,
        )
        .await?;
    Ok(found.into_iter().map(|m| m.merchant_id).collect())
}

/// A merchant's charging freeze: by a complaint (`column` frozen) or by its credit score
/// (credit_frozen).
pub async fn set_merchant_frozen(tx: &mut Tx, merchant_id: &str, column: &str, frozen: bool) -> anyhow::Result<()> {
    let column = if column == "credit_frozen" { "credit_frozen" } else { "frozen" };
    tx.execute(
        &format!("UPDATE scheduler_merchants SET {column} = $1 WHERE merchant_id = $2"),
        &[Value::from(frozen), Value::from(merchant_id)],
    )
    .await?;
    Ok(())
}

// ---- usage ----------------------------------------------------------------------------------

/// The usage recorded for each of `contract_ids`, per usage period: (contract, period,
/// quantity).
pub async fn usage_of(db: &mut Db<'_>, contract_ids: &[&str]) -> anyhow::Result<Vec<(String, i64, u64)>> {
    #[derive(sqlx::FromRow)]
    struct Used {
        contract_id: String,
        period: i64,
        quantity: i64,
    }
    if contract_ids.is_empty() {
        return Ok(Vec::new());
    }
    let (list, params) = in_list(db.kind(), 1, contract_ids);
    let found: Vec<Used> = db
        .query_as(
            &format!(
                "SELECT contract_id, period, CAST(SUM(quantity) AS BIGINT) AS quantity FROM scheduler_usage
                 WHERE contract_id IN {list} GROUP BY contract_id, period"
            ),
            &params,
        )
        .await?;
    Ok(found.into_iter().map(|u| (u.contract_id, u.period, u64::try_from(u.quantity).unwrap_or(0))).collect())
}

/// The usage recorded so far in one period of a contract.
pub async fn usage_in(store: &EventStore, contract_id: &str, period: u32) -> anyhow::Result<u64> {
    #[derive(sqlx::FromRow)]
    struct Sum {
        quantity: i64,
    }
    let found: Vec<Sum> = store
        .query_as(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS quantity FROM scheduler_usage
             WHERE contract_id = $1 AND period = $2",
            &[Value::from(contract_id), Value::Int(i64::from(period))],
        )
        .await?;
    Ok(found.first().map_or(0, |s| u64::try_from(s.quantity).unwrap_or(0)))
}

/// The period a usage record was counted in, if it was recorded.
pub async fn usage_recorded(tx: &mut Tx, usage_id: &str) -> anyhow::Result<Option<u32>> {
    #[derive(sqlx::FromRow)]
    struct Period {
        period: i64,
    }
    let found: Vec<Period> =
        tx.query_as("SELECT period FROM scheduler_usage WHERE usage_id = $1", &[Value::from(usage_id)]).await?;
    Ok(found.first().map(|p| u32::try_from(p.period).unwrap_or(0)))
}

pub async fn insert_usage(
    tx: &mut Tx,
    usage_id: &str,
    contract_id: &str,
    period: u32,
    quantity: u64,
    occurred_at: Timestamp,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_usage (usage_id, contract_id, period, quantity, occurred_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Value::from(usage_id),
            Value::from(contract_id),
            Value::Int(i64::from(period)),
            Value::Int(i64::try_from(quantity).unwrap_or(i64::MAX)),
            Value::Int(ms(occurred_at)),
        ],
    )
    .await?;
    Ok(())
}

// ---- retries --------------------------------------------------------------------------------

/// A failed charge's next attempt, due at `due`, after the failure at `stream_version`.
pub async fn schedule_retry(
    tx: &mut Tx,
    charge_id: &str,
    contract_id: &str,
    stream_version: u64,
    due: Timestamp,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_retries (charge_id, contract_id, stream_version, due_ms, state)
         VALUES ($1, $2, $3, $4, 'waiting')
         ON CONFLICT (charge_id) DO UPDATE SET stream_version = excluded.stream_version,
           due_ms = excluded.due_ms, state = 'waiting'",
        &[
            Value::from(charge_id),
            Value::from(contract_id),
            Value::Int(i64::try_from(stream_version).unwrap_or(i64::MAX)),
            Value::Int(ms(due)),
        ],
    )
    .await?;
    Ok(())
}

pub async fn any_retry_due(store: &EventStore, now: Timestamp) -> anyhow::Result<bool> {
    let found = store
        .query(
            "SELECT 1 FROM scheduler_retries WHERE state = 'waiting' AND due_ms <= $1 LIMIT 1",
            &[Value::Int(ms(now))],
        )
        .await?;
    Ok(!found.is_empty())
}

/// A retry that is due: the charge and the stream version its failure was at.
#[derive(Debug, sqlx::FromRow)]
pub struct DueRetry {
    pub charge_id: String,
    pub stream_version: i64,
}

/// Up to `limit` retries due by `now` whose contract still bills and whose merchant is not
/// suspended, earliest first; locked on PostgreSQL (`SKIP LOCKED`).
pub async fn claim_retries(tx: &mut Tx, now: Timestamp, limit: i64) -> anyhow::Result<Vec<DueRetry>> {
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF r SKIP LOCKED" } else { "" };
    Ok(tx
        .query_as(
            &format!(
                "SELECT r.charge_id, r.stream_version FROM scheduler_retries r
                 JOIN scheduler_schedules s ON s.contract_id = r.contract_id
                 WHERE r.state = 'waiting' AND r.due_ms <= $1 AND s.active = 1
                   AND NOT EXISTS (SELECT 1 FROM scheduler_merchants m
                                   WHERE m.merchant_id = s.merchant_id AND m.suspended = 1)
                 ORDER BY r.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(ms(now)), Value::Int(limit)],
        )
        .await?)
}

pub async fn retry_issued(tx: &mut Tx, charge_id: &str) -> anyhow::Result<()> {
    tx.execute("UPDATE scheduler_retries SET state = 'issued' WHERE charge_id = $1", &[Value::from(charge_id)]).await?;
    Ok(())
}

// ---- charges held for the window --------------------------------------------------------------

/// A triggered charge held until the charge window opens.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Held {
    pub charge_id: String,
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub due_ms: i64,
}

/// Holds a charge; `false` when one with its id is held already.
pub async fn hold(tx: &mut Tx, h: &Held) -> anyhow::Result<bool> {
    let inserted = tx
        .execute(
            "INSERT INTO scheduler_held
               (charge_id, contract_id, merchant_id, payer_id, amount, currency, reason, due_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (charge_id) DO NOTHING",
            &[
                Value::from(&h.charge_id),
                Value::from(&h.contract_id),
                Value::from(&h.merchant_id),
                Value::from(&h.payer_id),
                Value::Int(h.amount),
                Value::from(&h.currency),
                Value::from(&h.reason),
                Value::Int(h.due_ms),
            ],
        )
        .await?;
    Ok(inserted > 0)
}

/// The charge held under `charge_id`, if any.
pub async fn held(db: &mut Db<'_>, charge_id: ChargeId) -> anyhow::Result<Option<Held>> {
    let found: Vec<Held> = db
        .query_as(
            "SELECT charge_id, contract_id, merchant_id, payer_id, amount, currency, reason, due_ms
             FROM scheduler_held WHERE charge_id = $1",
            &[Value::from(charge_id.to_string())],
        )
        .await?;
    Ok(found.into_iter().next())
}

pub async fn any_held_due(store: &EventStore, now: Timestamp) -> anyhow::Result<bool> {
    let found = store.query("SELECT 1 FROM scheduler_held WHERE due_ms <= $1 LIMIT 1", &[Value::Int(ms(now))]).await?;
    Ok(!found.is_empty())
}

/// A held charge whose window has opened, with whether its contract still bills and whether
/// its merchant is suspended.
#[derive(Debug, sqlx::FromRow)]
pub struct Releasable {
    #[sqlx(flatten)]
    pub held: Held,
    pub active: i64,
    pub suspended: i64,
    pub frozen: i64,
}

/// Up to `limit` held charges due by `now`, earliest first; locked on PostgreSQL.
pub async fn claim_held(tx: &mut Tx, now: Timestamp, limit: i64) -> anyhow::Result<Vec<Releasable>> {
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF h SKIP LOCKED" } else { "" };
    Ok(tx
        .query_as(
            &format!(
                "SELECT h.charge_id, h.contract_id, h.merchant_id, h.payer_id, h.amount, h.currency, h.reason, h.due_ms,
                   COALESCE(s.active, 0) AS active, COALESCE(m.suspended, 0) AS suspended,
                   COALESCE(m.frozen, 0) + COALESCE(m.credit_frozen, 0) AS frozen
                 FROM scheduler_held h LEFT JOIN scheduler_schedules s ON s.contract_id = h.contract_id
                   LEFT JOIN scheduler_merchants m ON m.merchant_id = h.merchant_id
                 WHERE h.due_ms <= $1 ORDER BY h.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(ms(now)), Value::Int(limit)],
        )
        .await?)
}

pub async fn release(tx: &mut Tx, charge_id: &str) -> anyhow::Result<()> {
    tx.execute("DELETE FROM scheduler_held WHERE charge_id = $1", &[Value::from(charge_id)]).await?;
    Ok(())
}
