//! The scheduler's own table: one billing schedule per contract, which is also its due timer.
use autodebit_domain::Cycle;
use autodebit_domain::modification::Calendar;
use autodebit_domain::plan::ModificationRule;
use autodebit_eventstore::Migrations;

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("scheduler", 2000..3000);

pub const COLUMNS: &str = "contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, \
                           next_due_ms, active, plan_id, expires_at_ms, total_succeeded, first_success_ms, mode, \
                           time_zone, notice_lead_ms, noticed_period, ready_ms, usage_cycle, usage_grace_ms, \
                           usage_period, usage_end_ms, usage_noticed, usage_ready_ms, wake_ms, day_key, day_count, \
                           day_amount, rev, cycle_anchor_ms, cycle_anchor_period, change_through, change_amount, \
                           change_cycle";

/// How a schedule's charges arise: which of its two sides run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fixed,
    Usage,
    Event,
    Hybrid,
}

impl Mode {
    pub fn parse(s: &str) -> Mode {
        match s {
            "usage" => Mode::Usage,
            "event" => Mode::Event,
            "hybrid" => Mode::Hybrid,
            _ => Mode::Fixed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fixed => "fixed",
            Mode::Usage => "usage",
            Mode::Event => "event",
            Mode::Hybrid => "hybrid",
        }
    }

    /// Whether it charges a fixed amount each cycle.
    pub fn fixed(self) -> bool {
        matches!(self, Mode::Fixed | Mode::Hybrid)
    }

    /// Whether it charges each usage period's metered total.
    pub fn metered(self) -> bool {
        matches!(self, Mode::Usage | Mode::Hybrid)
    }

    pub fn to_pb(self) -> autodebit_proto::events::v1::ChargeMode {
        use autodebit_proto::events::v1::ChargeMode as M;
        match self {
            Mode::Fixed => M::FixedCycle,
            Mode::Usage => M::Usage,
            Mode::Event => M::EventTriggered,
            Mode::Hybrid => M::Hybrid,
        }
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
    pub mode: Mode,
    pub time_zone: String,
    /// How long before a charge its pre-debit notice goes out.
    pub notice_lead_ms: i64,
    /// The fixed-cycle period whose notice went out last, and when its charge may go.
    pub noticed_period: i64,
    pub ready_ms: i64,
    /// The usage side: the period (0: none), its grace window, the open period, when it ends,
    /// which period was noticed, and when its charge may go.
    pub usage_cycle: String,
    pub usage_grace_ms: i64,
    pub usage_period: i64,
    pub usage_end_ms: i64,
    pub usage_noticed: i64,
    pub usage_ready_ms: i64,
    /// The earliest moment anything is due.
    pub wake_ms: i64,
    /// What the contract was charged on its latest charging day (merchant's calendar).
    pub day_key: String,
    pub day_count: i64,
    pub day_amount: i64,
    /// Raised by every change to the row.
    pub rev: i64,
    /// The fixed side's calendar: period `n` falls due `n - cycle_anchor_period` cycles after
    /// `cycle_anchor_ms` (the signing, until a cycle change re-anchors it).
    pub cycle_anchor_ms: i64,
    pub cycle_anchor_period: i64,
    /// A change of terms waiting for its period: the last period on the old terms (-1: none),
    /// and the new amount and cycle.
    pub change_through: i64,
    pub change_amount: i64,
    pub change_cycle: String,
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
            mode: Mode::parse(r.text(14)?),
            time_zone: r.text(15)?.to_string(),
            notice_lead_ms: r.i64(16)?,
            noticed_period: r.i64(17)?,
            ready_ms: r.i64(18)?,
            usage_cycle: r.text(19)?.to_string(),
            usage_grace_ms: r.i64(20)?,
            usage_period: r.i64(21)?,
            usage_end_ms: r.i64(22)?,
            usage_noticed: r.i64(23)?,
            usage_ready_ms: r.i64(24)?,
            wake_ms: r.i64(25)?,
            day_key: r.text(26)?.to_string(),
            day_count: r.i64(27)?,
            day_amount: r.i64(28)?,
            rev: r.i64(29)?,
            cycle_anchor_ms: r.i64(30)?,
            cycle_anchor_period: r.i64(31)?,
            change_through: r.i64(32)?,
            change_amount: r.i64(33)?,
            change_cycle: r.text(34)?.to_string(),
        })
    }
}

impl ScheduleRow {
    /// From a JSON array of the `COLUMNS` values, as SQLite's `json_array` gives it.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let a = v.as_array()?;
        let t = |i: usize| a.get(i)?.as_str().map(str::to_string);
        let n = |i: usize| a.get(i)?.as_i64();
        Some(ScheduleRow {
            contract_id: t(0)?,
            merchant_id: t(1)?,
            payer_id: t(2)?,
            amount: n(3)?,
            currency: t(4)?,
            cycle: t(5)?,
            anchor_ms: n(6)?,
            next_period: n(7)?,
            next_due_ms: n(8)?,
            active: n(9)? != 0,
            plan_id: t(10)?,
            expires_at_ms: n(11)?,
            total_succeeded: n(12)?,
            first_success_ms: n(13)?,
            mode: Mode::parse(a.get(14)?.as_str()?),
            time_zone: t(15)?,
            notice_lead_ms: n(16)?,
            noticed_period: n(17)?,
            ready_ms: n(18)?,
            usage_cycle: t(19)?,
            usage_grace_ms: n(20)?,
            usage_period: n(21)?,
            usage_end_ms: n(22)?,
            usage_noticed: n(23)?,
            usage_ready_ms: n(24)?,
            wake_ms: n(25)?,
            day_key: t(26)?,
            day_count: n(27)?,
            day_amount: n(28)?,
            rev: n(29)?,
            cycle_anchor_ms: n(30)?,
            cycle_anchor_period: n(31)?,
            change_through: n(32)?,
            change_amount: n(33)?,
            change_cycle: t(34)?,
        })
    }
}

impl ScheduleRow {
    /// The merchant's time zone, which the schedule's calendars count in.
    pub fn zone(&self) -> chrono_tz::Tz {
        autodebit_domain::cycle::zone(&self.time_zone).unwrap_or(chrono_tz::Asia::Shanghai)
    }

    /// The fixed side's calendar; `None` for a cycle the scheduler does not know.
    pub fn calendar(&self) -> Option<Calendar> {
        Some(Calendar {
            cycle: cycle_from_str(&self.cycle)?,
            anchor: autodebit_domain::clock::from_millis(self.cycle_anchor_ms),
            anchor_period: u32::try_from(self.cycle_anchor_period).ok()?,
        })
    }
}

/// A plan's modification rule as `scheduler_plans` keeps it.
pub fn rule_as_str(rule: ModificationRule) -> &'static str {
    match rule {
        ModificationRule::Immediately => "immediately",
        ModificationRule::NextCycle => "next_cycle",
    }
}

pub fn rule_from_str(s: &str) -> ModificationRule {
    if s == "immediately" { ModificationRule::Immediately } else { ModificationRule::NextCycle }
}

/// The merchants among `ids` that are suspended.
pub async fn suspended_merchants(
    db: &mut Db<'_>,
    ids: &[&str],
) -> autodebit_eventstore::Result<std::collections::HashSet<String>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let (list, params) = in_list(db.kind(), 1, &ids);
    let found = db
        .query(
            &format!("SELECT merchant_id FROM scheduler_merchants WHERE suspended = 1 AND merchant_id IN {list}"),
            &params,
        )
        .await?;
    Ok(found.iter().filter_map(|r| r.text(0).map(str::to_string)).collect())
}

/// `$from, $from+1, …` for `n` values, for IN lists.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// A plan as the scheduler keeps it.
#[derive(Debug, Clone, Default)]
pub struct PlanRow {
    pub per_charge_cap: i64,
    pub daily_count_limit: i64,
    pub daily_amount_limit: i64,
    pub usage_unit: String,
    /// `up_to:unit_price` pairs joined by `,`; `up_to` 0 is unbounded.
    pub usage_tiers: String,
}

pub const PLAN_COLUMNS: &str =
    "plan_id, per_charge_cap, daily_count_limit, daily_amount_limit, usage_unit, usage_tiers";

impl PlanRow {
    /// From a row selected with `PLAN_COLUMNS`: (plan id, plan).
    pub fn from_row(r: &autodebit_eventstore::Row) -> Option<(String, Self)> {
        Some((
            r.text(0)?.to_string(),
            PlanRow {
                per_charge_cap: r.i64(1)?,
                daily_count_limit: r.i64(2)?,
                daily_amount_limit: r.i64(3)?,
                usage_unit: r.text(4)?.to_string(),
                usage_tiers: r.text(5)?.to_string(),
            },
        ))
    }

    /// The price of `quantity` under the plan's tiers; `None` when it has none or on overflow.
    pub fn price(&self, quantity: u64) -> Option<i64> {
        let tiers = self
            .usage_tiers
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                let (up, price) = t.split_once(':')?;
                let up: u64 = up.parse().ok()?;
                Some(autodebit_domain::usage::PriceTier {
                    up_to: (up > 0).then_some(up),
                    unit_price: price.parse().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if tiers.is_empty() {
            return None;
        }
        autodebit_domain::usage::UsagePricing {
            unit: self.usage_unit.clone(),
            tiers,
            grace_minutes: 0,
            cycle: Cycle::Monthly,
        }
        .price(quantity)
    }
}

/// Tiers as `PlanRow::usage_tiers` keeps them.
pub fn tiers_to_str(tiers: &[autodebit_domain::usage::PriceTier]) -> String {
    tiers.iter().map(|t| format!("{}:{}", t.up_to.unwrap_or(0), t.unit_price)).collect::<Vec<_>>().join(",")
}

/// The right-hand side of `x IN …` for `items`, its parameters numbered from `from`. SQLite
/// gets one JSON array parameter (`json_each`): binding a thousand parameters by name costs it
/// quadratic time. PostgreSQL gets a plain list.
pub fn in_list(
    kind: autodebit_eventstore::BackendKind,
    from: usize,
    items: &[&str],
) -> (String, Vec<autodebit_eventstore::Value>) {
    use autodebit_eventstore::{BackendKind, Value};
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

/// Where a read goes: inside a write transaction (seeing its own changes, holding its locks)
/// or to a reader connection.
pub enum Db<'a> {
    Tx(&'a mut autodebit_eventstore::Tx),
    Store(&'a autodebit_eventstore::EventStore),
}

impl Db<'_> {
    pub fn kind(&self) -> autodebit_eventstore::BackendKind {
        match self {
            Db::Tx(tx) => tx.kind(),
            Db::Store(store) => store.kind(),
        }
    }

    pub async fn query(
        &mut self,
        sql: &str,
        params: &[autodebit_eventstore::Value],
    ) -> autodebit_eventstore::Result<Vec<autodebit_eventstore::Row>> {
        match self {
            Db::Tx(tx) => tx.query(sql, params).await,
            Db::Store(store) => store.query(sql, params).await,
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
