//! The analytics tables, and every statement on them (`migrations/` holds their schema):
//! contracts and charges with their states, platform-wide and per-merchant counters, and the
//! API keys (kept by `runtime::auth`).
use autodebit_eventstore::{EventStore, Migrations, StoreError, Tx, Value};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("analytics", 5000..6000);

/// The projections, each the tables it writes: what `analytics rebuild --projection` names.
pub const PROJECTIONS: &[(&str, &[&str])] = &[
    ("contracts", &["analytics_merchants", "analytics_contracts"]),
    ("charges", &["analytics_charges", "analytics_refunds"]),
    ("funnel", &["analytics_signing_sessions"]),
    ("notices", &["analytics_notices"]),
    ("counters", &["analytics_counters", "analytics_merchant_counters"]),
    ("settlements", &["analytics_settlements", "analytics_merchant_reviews"]),
    ("risk", &["analytics_risk_holds", "analytics_complaints"]),
];

/// The shadow of a table: where a rebuild writes it before it is swapped in.
pub fn shadow_of(table: &str) -> String {
    format!("analytics_shadow_{}", table.trim_start_matches("analytics_"))
}

/// Which tables the projector writes, and under which names: all of them in place (the live
/// projector), or some into their shadows (a rebuild), the others left alone.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// `None`: every table, live.
    shadowed: Option<Vec<&'static str>>,
}

impl Names {
    /// `tables` into their shadows; nothing else written.
    pub fn shadows(tables: Vec<&'static str>) -> Names {
        Names { shadowed: Some(tables) }
    }

    /// Whether the projector writes `table`.
    pub fn writes(&self, table: &str) -> bool {
        self.shadowed.as_ref().is_none_or(|t| t.contains(&table))
    }

    /// `sql` with the shadowed tables' names put in for theirs.
    pub fn apply(&self, sql: &str) -> String {
        let Some(tables) = &self.shadowed else { return sql.to_string() };
        let mut out = sql.to_string();
        for t in tables {
            out = replace_name(&out, t, &shadow_of(t));
        }
        out
    }
}

/// Replaces the identifier `name` (not a longer one it begins) in `sql`.
fn replace_name(sql: &str, name: &str, with: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(name) {
        let after = &rest[i + name.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if whole { with } else { name });
        rest = after;
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Projection writes

/// Adds `by` to the platform-wide counter `name`.
pub async fn bump(tx: &mut Tx, names: &Names, name: &str, by: i64) -> Result<(), StoreError> {
    if by == 0 || !names.writes("analytics_counters") {
        return Ok(());
    }
    tx.execute(
        &names.apply(
            "INSERT INTO analytics_counters (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = analytics_counters.value + excluded.value",
        ),
        &[Value::from(name), Value::Int(by)],
    )
    .await?;
    Ok(())
}

/// The statements the projector writes rows with, one per run of events that need the same.
/// Each row is a JSON array; its first item is the key of the row it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Statement {
    /// `[merchant_id, industry, time_zone]`
    Merchant,
    /// `[contract_id, merchant_id, plan_id, payer_id, signed_at_ms, currency, monthly_amount]`
    ContractSigned,
    /// `[contract_id, state, ended_at_ms]`
    ContractState,
    /// `[contract_id, monthly_amount]`
    ContractAmount,
    /// `[contract_id, flagged_at_ms]`
    ContractZombie,
    /// `[charge_id, contract_id, merchant_id, amount, currency, due_at_ms, reason]`
    ChargeScheduled,
    /// `[charge_id, state, code, at_ms, local_hour (-1: keep), failed (1 or 0)]`
    ChargeOutcome,
    /// `[charge_id, contract_id, merchant_id, amount, currency, rule, due_at_ms, rejected_at_ms]`:
    /// refused at issue (no row yet) or after scheduling (its row).
    ChargeRejected,
    /// `[session_id, merchant_id, plan_id, payer_id, channel, device_id, opened_at_ms]`
    SessionOpened,
    /// `[session_id, viewed_at_ms, device_kind (null: none), ticked_at_ms, held_at_ms,
    /// sms_required_at_ms, confirmed_at_ms, contract_id (null: none), outcome ('': none)]`: a
    /// batch's steps of one session folded into one row ([`crate::processor::SessionSteps`]),
    /// each time 0 where the batch has no such step.
    SessionStep,
    /// `[notice_id, merchant_id, contract_id, kind, recorded_at_ms]`
    NoticeRecorded,
    /// `[notice_id, channel, outcome ('sent', 'delivered', other), at_ms]`
    NoticeDelivery,
    /// `[notice_id, at_ms]`
    NoticeOpened,
    /// `[notice_id, at_ms]`
    NoticeConverted,
    /// `[refund_id, charge_id, merchant_id, amount, currency, at_ms]`
    RefundRequested,
    /// `[refund_id, state, at_ms]`
    RefundOutcome,
    /// `[batch_id, merchant_id, currency, business_date, closed_at_ms, lines, gross, refunds,
    /// fees, splits, net]`
    Settlement,
    /// `[key (merchant|opened_at_ms), merchant_id, opened_at_ms, reason, refunds, charges,
    /// rate_basis_points]`
    ReviewOpened,
    /// `[merchant_id, resolved_at_ms]`: resolves the merchant's reviews open by then.
    ReviewResolved,
    /// `[charge_id, merchant_id, contract_id, rule, amount, currency, mean, threshold_percent,
    /// held_at_ms]`
    HoldOpened,
    /// `[charge_id, outcome, decided_by, decided_at_ms]`: a held charge released or rejected
    /// (a charge never held has no row to change).
    HoldDecided,
    /// `[complaint_id, charge_id, contract_id, merchant_id, kind, source, charged, currency,
    /// filed_at_ms, deadline_at_ms]`
    ComplaintFiled,
    /// `[complaint_id, answer, answered_at_ms, late, refunded]`
    ComplaintAnswered,
    /// `[complaint_id, penalty, missed_at_ms]`
    ComplaintMissed,
}

/// `UPDATE table SET … FROM (rows) v WHERE key = v.k`, the rows' items named by `columns`
/// (`name` or `name:BIGINT`), the first of them the key.
fn update_from(table: &str, key: &str, set: &str, columns: &[&str], rows: &str) -> String {
    let items: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| match c.split_once(':') {
            Some((name, ty)) => format!("CAST(value->>{i} AS {ty}) AS {name}"),
            None => format!("value->>{i} AS {c}"),
        })
        .collect();
    let k = columns[0].split(':').next().unwrap_or_default();
    format!("UPDATE {table} SET {set} FROM (SELECT {} FROM {rows}) v WHERE {table}.{key} = v.{k}", items.join(", "))
}

impl Statement {
    /// The table it writes.
    fn table(self) -> &'static str {
        match self {
            Statement::Merchant => "analytics_merchants",
            Statement::ContractSigned
            | Statement::ContractState
            | Statement::ContractAmount
            | Statement::ContractZombie => "analytics_contracts",
            Statement::ChargeScheduled | Statement::ChargeOutcome | Statement::ChargeRejected => "analytics_charges",
            Statement::SessionOpened | Statement::SessionStep => "analytics_signing_sessions",
            Statement::NoticeRecorded
            | Statement::NoticeDelivery
            | Statement::NoticeOpened
            | Statement::NoticeConverted => "analytics_notices",
            Statement::RefundRequested | Statement::RefundOutcome => "analytics_refunds",
            Statement::Settlement => "analytics_settlements",
            Statement::ReviewOpened | Statement::ReviewResolved => "analytics_merchant_reviews",
            Statement::HoldOpened | Statement::HoldDecided => "analytics_risk_holds",
            Statement::ComplaintFiled | Statement::ComplaintAnswered | Statement::ComplaintMissed => {
                "analytics_complaints"
            }
        }
    }

    fn sql(self, rows: &str) -> String {
        match self {
            Statement::Merchant => format!(
                "INSERT INTO analytics_merchants (merchant_id, industry, time_zone)
                 SELECT value->>0, value->>1, value->>2 FROM {rows} WHERE true
                 ON CONFLICT (merchant_id) DO UPDATE SET industry = excluded.industry, time_zone = excluded.time_zone"
            ),
            Statement::ContractSigned => format!(
                "INSERT INTO analytics_contracts (contract_id, merchant_id, plan_id, payer_id, state, signed_at_ms,
                                                  ended_at_ms, currency, monthly_amount, zombie_flagged_at_ms)
                 SELECT value->>0, value->>1, value->>2, value->>3, 'active', CAST(value->>4 AS BIGINT), 0, value->>5,
                        CAST(value->>6 AS BIGINT), 0
                 FROM {rows} WHERE true
                 ON CONFLICT (contract_id) DO NOTHING"
            ),
            Statement::ContractState => update_from(
                "analytics_contracts",
                "contract_id",
                "state = v.state, ended_at_ms = v.at",
                &["id", "state", "at:BIGINT"],
                rows,
            ),
            Statement::ContractAmount => update_from(
                "analytics_contracts",
                "contract_id",
                "monthly_amount = v.amount",
                &["id", "amount:BIGINT"],
                rows,
            ),
            Statement::ContractZombie => update_from(
                "analytics_contracts",
                "contract_id",
                "zombie_flagged_at_ms = v.at",
                &["id", "at:BIGINT"],
                rows,
            ),
            Statement::ChargeScheduled => format!(
                "INSERT INTO analytics_charges (charge_id, contract_id, merchant_id, plan_id, reason, amount, currency,
                                                state, code, failures, due_at_ms, updated_at_ms, local_hour)
                 SELECT value->>0, value->>1, value->>2,
                        COALESCE((SELECT c.plan_id FROM analytics_contracts c WHERE c.contract_id = value->>1), ''),
                        value->>6, CAST(value->>3 AS BIGINT), value->>4, 'scheduled', '', 0,
                        CAST(value->>5 AS BIGINT), CAST(value->>5 AS BIGINT), -1
                 FROM {rows} WHERE true
                 ON CONFLICT (charge_id) DO NOTHING"
            ),
            // A charge's row exists by now: its `ChargeScheduled` comes first in its stream,
            // the log keeps stream order, and the run before this one was written first.
            Statement::ChargeOutcome => update_from(
                "analytics_charges",
                "charge_id",
                "state = v.state, code = CASE WHEN v.code = '' THEN analytics_charges.code ELSE v.code END,
                 updated_at_ms = v.at,
                 local_hour = CASE WHEN v.hour < 0 THEN analytics_charges.local_hour ELSE v.hour END,
                 failures = analytics_charges.failures + v.failed",
                &["id", "state", "code", "at:BIGINT", "hour:BIGINT", "failed:BIGINT"],
                rows,
            ),
            Statement::ChargeRejected => format!(
                "INSERT INTO analytics_charges (charge_id, contract_id, merchant_id, plan_id, reason, amount, currency,
                                                state, code, failures, due_at_ms, updated_at_ms, local_hour)
                 SELECT value->>0, value->>1, value->>2,
                        COALESCE((SELECT c.plan_id FROM analytics_contracts c WHERE c.contract_id = value->>1), ''),
                        '', CAST(value->>3 AS BIGINT), value->>4, 'rejected', value->>5, 0, CAST(value->>6 AS BIGINT),
                        CAST(value->>7 AS BIGINT), -1
                 FROM {rows} WHERE true
                 ON CONFLICT (charge_id) DO UPDATE SET state = 'rejected', code = excluded.code,
                   updated_at_ms = excluded.updated_at_ms"
            ),
            Statement::SessionOpened => format!(
                "INSERT INTO analytics_signing_sessions (session_id, merchant_id, plan_id, payer_id, channel, device_id,
                     opened_at_ms, page_viewed_at_ms, ticked_at_ms, held_at_ms, sms_required_at_ms, confirmed_at_ms,
                     contract_id, outcome, device_kind)
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, CAST(value->>6 AS BIGINT),
                        0, 0, 0, 0, 0, '', 'open', ''
                 FROM {rows} WHERE true
                 ON CONFLICT (session_id) DO NOTHING"
            ),
            // Each step's time is its first; the outcome follows the steps that end a session.
            Statement::SessionStep => update_from(
                "analytics_signing_sessions",
                "session_id",
                "page_viewed_at_ms = CASE WHEN page_viewed_at_ms = 0 THEN v.viewed ELSE page_viewed_at_ms END,
                 device_kind = CASE WHEN page_viewed_at_ms = 0 THEN COALESCE(v.device, device_kind) ELSE device_kind END,
                 ticked_at_ms = CASE WHEN ticked_at_ms = 0 THEN v.ticked ELSE ticked_at_ms END,
                 held_at_ms = CASE WHEN held_at_ms = 0 THEN v.held ELSE held_at_ms END,
                 sms_required_at_ms = CASE WHEN sms_required_at_ms = 0 THEN v.sms ELSE sms_required_at_ms END,
                 confirmed_at_ms = CASE WHEN confirmed_at_ms = 0 THEN v.confirmed ELSE confirmed_at_ms END,
                 contract_id = COALESCE(v.contract, contract_id),
                 outcome = CASE WHEN outcome <> 'open' OR v.ended = '' THEN outcome ELSE v.ended END",
                &[
                    "id",
                    "viewed:BIGINT",
                    "device",
                    "ticked:BIGINT",
                    "held:BIGINT",
                    "sms:BIGINT",
                    "confirmed:BIGINT",
                    "contract",
                    "ended",
                ],
                rows,
            ),
            Statement::NoticeRecorded => format!(
                "INSERT INTO analytics_notices (notice_id, merchant_id, contract_id, kind, channel, recorded_at_ms,
                                                sent_at_ms, delivered_at_ms, opened_at_ms, converted_at_ms)
                 SELECT value->>0, value->>1, value->>2, value->>3, '', CAST(value->>4 AS BIGINT), 0, 0, 0, 0
                 FROM {rows} WHERE true
                 ON CONFLICT (notice_id) DO UPDATE SET merchant_id = excluded.merchant_id,
                   contract_id = excluded.contract_id, kind = excluded.kind, recorded_at_ms = excluded.recorded_at_ms"
            ),
            // The provider's own pre-debit notice is recorded on its own stream, so its delivery
            // may come before the notice itself: a delivery makes the row when it is first, and
            // the channel is the one that took the notice first (by time, then by name),
            // whatever order the two arrive in.
            Statement::NoticeDelivery => format!(
                "INSERT INTO analytics_notices (notice_id, merchant_id, contract_id, kind, channel, recorded_at_ms,
                                                sent_at_ms, delivered_at_ms, opened_at_ms, converted_at_ms)
                 SELECT value->>0, '', '', '', CASE WHEN value->>2 = 'sent' THEN value->>1 ELSE '' END, 0,
                        CASE WHEN value->>2 = 'sent' THEN CAST(value->>3 AS BIGINT) ELSE 0 END,
                        CASE WHEN value->>2 = 'delivered' THEN CAST(value->>3 AS BIGINT) ELSE 0 END, 0, 0
                 FROM {rows} WHERE true
                 ON CONFLICT (notice_id) DO UPDATE SET
                   channel = CASE WHEN excluded.sent_at_ms > 0
                                   AND (analytics_notices.sent_at_ms = 0
                                        OR excluded.sent_at_ms < analytics_notices.sent_at_ms
                                        OR (excluded.sent_at_ms = analytics_notices.sent_at_ms
                                            AND excluded.channel < analytics_notices.channel))
                                  THEN excluded.channel ELSE analytics_notices.channel END,
                   sent_at_ms = CASE WHEN excluded.sent_at_ms > 0
                                      AND (analytics_notices.sent_at_ms = 0
                                           OR excluded.sent_at_ms < analytics_notices.sent_at_ms)
                                     THEN excluded.sent_at_ms ELSE analytics_notices.sent_at_ms END,
                   delivered_at_ms = CASE WHEN excluded.delivered_at_ms > 0
                                           AND (analytics_notices.delivered_at_ms = 0
                                                OR excluded.delivered_at_ms < analytics_notices.delivered_at_ms)
                                          THEN excluded.delivered_at_ms ELSE analytics_notices.delivered_at_ms END"
            ),
            Statement::NoticeOpened => update_from(
                "analytics_notices",
                "notice_id",
                "opened_at_ms = CASE WHEN opened_at_ms = 0 THEN v.at ELSE opened_at_ms END",
                &["id", "at:BIGINT"],
                rows,
            ),
            Statement::NoticeConverted => update_from(
                "analytics_notices",
                "notice_id",
                "converted_at_ms = CASE WHEN converted_at_ms = 0 THEN v.at ELSE converted_at_ms END",
                &["id", "at:BIGINT"],
                rows,
            ),
            Statement::RefundRequested => format!(
                "INSERT INTO analytics_refunds (refund_id, charge_id, merchant_id, amount, currency, state, at_ms)
                 SELECT value->>0, value->>1, value->>2, CAST(value->>3 AS BIGINT), value->>4, 'requested',
                        CAST(value->>5 AS BIGINT)
                 FROM {rows} WHERE true
                 ON CONFLICT (refund_id) DO NOTHING"
            ),
            Statement::RefundOutcome => update_from(
                "analytics_refunds",
                "refund_id",
                "state = v.state, at_ms = v.at",
                &["id", "state", "at:BIGINT"],
                rows,
            ),
            Statement::Settlement => format!(
                "INSERT INTO analytics_settlements (batch_id, merchant_id, currency, business_date, closed_at_ms, lines,
                                                   gross, refunds, fees, splits, net)
                 SELECT value->>0, value->>1, value->>2, value->>3, CAST(value->>4 AS BIGINT), CAST(value->>5 AS BIGINT),
                        CAST(value->>6 AS BIGINT), CAST(value->>7 AS BIGINT), CAST(value->>8 AS BIGINT),
                        CAST(value->>9 AS BIGINT), CAST(value->>10 AS BIGINT)
                 FROM {rows} WHERE true
                 ON CONFLICT (batch_id) DO NOTHING"
            ),
            Statement::ReviewOpened => format!(
                "INSERT INTO analytics_merchant_reviews (merchant_id, opened_at_ms, reason, refunds, charges,
                                                         rate_basis_points, resolved_at_ms)
                 SELECT value->>1, CAST(value->>2 AS BIGINT), value->>3, CAST(value->>4 AS BIGINT),
                        CAST(value->>5 AS BIGINT), CAST(value->>6 AS BIGINT), 0
                 FROM {rows} WHERE true
                 ON CONFLICT (merchant_id, opened_at_ms) DO NOTHING"
            ),
            Statement::HoldOpened => format!(
                "INSERT INTO analytics_risk_holds (charge_id, merchant_id, contract_id, rule, amount, currency, mean,
                                                  threshold_percent, held_at_ms, outcome, decided_by, decided_at_ms)
                 SELECT value->>0, value->>1, value->>2, value->>3, CAST(value->>4 AS BIGINT), value->>5,
                        CAST(value->>6 AS BIGINT), CAST(value->>7 AS BIGINT), CAST(value->>8 AS BIGINT), 'held', '', 0
                 FROM {rows} WHERE true
                 ON CONFLICT (charge_id) DO NOTHING"
            ),
            Statement::HoldDecided => update_from(
                "analytics_risk_holds",
                "charge_id",
                "outcome = v.outcome, decided_by = v.by, decided_at_ms = v.at",
                &["id", "outcome", "by", "at:BIGINT"],
                rows,
            ),
            Statement::ComplaintFiled => format!(
                "INSERT INTO analytics_complaints (complaint_id, charge_id, contract_id, merchant_id, kind, source, charged,
                                                  currency, filed_at_ms, deadline_at_ms, answer, answered_at_ms, late,
                                                  refunded, penalty, missed_at_ms)
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, CAST(value->>6 AS BIGINT),
                        value->>7, CAST(value->>8 AS BIGINT), CAST(value->>9 AS BIGINT), '', 0, 0, 0, '', 0
                 FROM {rows} WHERE true
                 ON CONFLICT (complaint_id) DO NOTHING"
            ),
            Statement::ComplaintAnswered => update_from(
                "analytics_complaints",
                "complaint_id",
                "answer = v.answer, answered_at_ms = v.at, late = v.late, refunded = v.refunded",
                &["id", "answer", "at:BIGINT", "late:BIGINT", "refunded:BIGINT"],
                rows,
            ),
            Statement::ComplaintMissed => update_from(
                "analytics_complaints",
                "complaint_id",
                "penalty = v.penalty, missed_at_ms = v.at",
                &["id", "penalty", "at:BIGINT"],
                rows,
            ),
            Statement::ReviewResolved => update_from(
                "analytics_merchant_reviews",
                "merchant_id",
                "resolved_at_ms = CASE WHEN analytics_merchant_reviews.resolved_at_ms = 0
                                        AND analytics_merchant_reviews.opened_at_ms <= v.at
                                       THEN v.at ELSE analytics_merchant_reviews.resolved_at_ms END",
                &["id", "at:BIGINT"],
                rows,
            ),
        }
    }
}

impl Statement {
    /// The order a batch's statements run in: rows that make a row (and what later inserts
    /// look up) before rows that change it. Within a statement rows keep their log order; the
    /// statements that change one table's rows change different columns, so their order
    /// among themselves does not matter.
    const ORDER: [Statement; 24] = [
        Statement::Merchant,
        Statement::ContractSigned,
        Statement::SessionOpened,
        Statement::ChargeScheduled,
        Statement::NoticeRecorded,
        Statement::RefundRequested,
        Statement::Settlement,
        Statement::ReviewOpened,
        Statement::HoldOpened,
        Statement::ComplaintFiled,
        Statement::ContractState,
        Statement::ContractAmount,
        Statement::ContractZombie,
        Statement::ChargeOutcome,
        Statement::ChargeRejected,
        Statement::SessionStep,
        Statement::NoticeDelivery,
        Statement::NoticeOpened,
        Statement::NoticeConverted,
        Statement::RefundOutcome,
        Statement::ReviewResolved,
        Statement::HoldDecided,
        Statement::ComplaintAnswered,
        Statement::ComplaintMissed,
    ];
}

/// A batch's rows, by statement, written a statement at a time in [`Statement::ORDER`].
#[derive(Default)]
pub struct Batch {
    rows: std::collections::HashMap<Statement, Vec<serde_json::Value>>,
}

impl Batch {
    pub fn push(&mut self, statement: Statement, row: serde_json::Value) {
        self.rows.entry(statement).or_default().push(row);
    }

    /// Writes the rows of the tables `names` writes. A statement writes a row once, so rows
    /// with a key seen already go in a later statement of the same kind.
    pub async fn write(mut self, tx: &mut Tx, names: &Names) -> Result<(), StoreError> {
        for statement in Statement::ORDER {
            let Some(mut rest) = self.rows.remove(&statement) else { continue };
            if !names.writes(statement.table()) {
                continue;
            }
            let sql = names.apply(&statement.sql(&tx.kind().json_rows(1)));
            while !rest.is_empty() {
                let mut seen = std::collections::HashSet::new();
                // Partition keeps each side's order, and a key's second row is never in `now`.
                let (now, later): (Vec<_>, Vec<_>) =
                    rest.into_iter().partition(|r| seen.insert(r[0].as_str().unwrap_or_default().to_string()));
                tx.execute(&sql, &[Value::from(serde_json::Value::Array(now).to_string())]).await?;
                rest = later;
            }
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct Zone {
    merchant_id: String,
    time_zone: String,
}

/// The zones of `merchant_ids` ("" for one not known).
pub async fn zones(tx: &mut Tx, names: &Names, merchant_ids: Vec<String>) -> Result<Vec<(String, String)>, StoreError> {
    if merchant_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::Value::Array(merchant_ids.into_iter().map(|m| serde_json::json!([m])).collect());
    let found: Vec<Zone> = tx
        .query_as(
            &names.apply(&format!(
                "SELECT merchant_id, time_zone FROM analytics_merchants WHERE merchant_id IN (SELECT value->>0 FROM {})",
                tx.kind().json_rows(1)
            )),
            &[Value::from(list.to_string())],
        )
        .await?;
    Ok(found.into_iter().map(|z| (z.merchant_id, z.time_zone)).collect())
}

/// Counts notices towards each merchant's `notices_recorded`, through the contract each is
/// about; `notices` holds one `[contract_id]` per notice.
pub async fn count_merchant_notices(
    tx: &mut Tx,
    names: &Names,
    notices: Vec<serde_json::Value>,
) -> Result<(), StoreError> {
    if notices.is_empty() || !names.writes("analytics_merchant_counters") {
        return Ok(());
    }
    tx.execute(
        &names.apply(&format!(
            "INSERT INTO analytics_merchant_counters (merchant_id, name, value)
             SELECT c.merchant_id, 'notices_recorded', COUNT(*)
             FROM {} v JOIN analytics_contracts c ON c.contract_id = v.value->>0
             WHERE true GROUP BY c.merchant_id
             ON CONFLICT (merchant_id, name)
               DO UPDATE SET value = analytics_merchant_counters.value + excluded.value",
            tx.kind().json_rows(1)
        )),
        &[Value::from(serde_json::Value::Array(notices).to_string())],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads

/// How many rows are in a state.
#[derive(Debug, sqlx::FromRow)]
pub struct StateCount {
    pub state: String,
    pub n: i64,
}

/// The sum of succeeded charges in one currency (minor units).
#[derive(Debug, sqlx::FromRow)]
pub struct CurrencySum {
    pub currency: String,
    pub total: i64,
}

/// A counter's value.
#[derive(Debug, sqlx::FromRow)]
pub struct Counter {
    pub name: String,
    pub value: i64,
}

/// `$1` is the merchant, or empty for all of them.
const WHOSE: &str = "($1 = '' OR merchant_id = $1)";

fn whose(merchant: Option<&str>) -> [Value; 1] {
    [Value::from(merchant.unwrap_or_default())]
}

/// Contracts by state: of `merchant`, or of all merchants.
pub async fn contracts_by_state(store: &EventStore, merchant: Option<&str>) -> Result<Vec<StateCount>, StoreError> {
    store
        .query_as(
            &format!("SELECT state, COUNT(*) AS n FROM analytics_contracts WHERE {WHOSE} GROUP BY state"),
            &whose(merchant),
        )
        .await
}

/// Charges by state: of `merchant`, or of all merchants.
pub async fn charges_by_state(store: &EventStore, merchant: Option<&str>) -> Result<Vec<StateCount>, StoreError> {
    store
        .query_as(
            &format!("SELECT state, COUNT(*) AS n FROM analytics_charges WHERE {WHOSE} GROUP BY state"),
            &whose(merchant),
        )
        .await
}

/// What succeeded charges took, per currency: of `merchant`, or of all merchants.
pub async fn succeeded_by_currency(store: &EventStore, merchant: Option<&str>) -> Result<Vec<CurrencySum>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT currency, CAST(SUM(amount) AS BIGINT) AS total FROM analytics_charges
                 WHERE state = 'succeeded' AND {WHOSE} GROUP BY currency"
            ),
            &whose(merchant),
        )
        .await
}

/// The counters: `merchant`'s own, or the platform-wide ones.
pub async fn counters(store: &EventStore, merchant: Option<&str>) -> Result<Vec<Counter>, StoreError> {
    match merchant {
        None => store.query_as("SELECT name, value FROM analytics_counters", &[]).await,
        Some(_) => {
            store
                .query_as(
                    "SELECT name, value FROM analytics_merchant_counters WHERE merchant_id = $1",
                    &whose(merchant),
                )
                .await
        }
    }
}

/// `$1` the merchant ("" for all), `$2`..`$3` the range (`$3` 0: open) over `column`.
fn scope(column: &str) -> String {
    format!("($1 = '' OR merchant_id = $1) AND {column} >= $2 AND ($3 = 0 OR {column} < $3)")
}

fn scoped(merchant: Option<&str>, from_ms: i64, until_ms: i64) -> [Value; 3] {
    [Value::from(merchant.unwrap_or_default()), Value::Int(from_ms), Value::Int(until_ms)]
}

/// One group of the signing funnel.
#[derive(Debug, sqlx::FromRow)]
pub struct FunnelCounts {
    pub grp: String,
    pub opened: i64,
    pub page_viewed: i64,
    pub ticked: i64,
    pub signed: i64,
    pub held: i64,
    pub sms: i64,
    pub abandoned: i64,
    pub expired: i64,
    pub rejected: i64,
}

/// A signed session's group and time to sign.
#[derive(Debug, sqlx::FromRow)]
pub struct TimeToSign {
    pub grp: String,
    pub ms: i64,
}

/// Sessions opened in the range, counted per step, grouped by `group` (a column, or '').
pub async fn funnel(
    store: &EventStore,
    group: &str,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<(Vec<FunnelCounts>, Vec<TimeToSign>), StoreError> {
    let when = |c: &str| format!("CAST(SUM(CASE WHEN {c} THEN 1 ELSE 0 END) AS BIGINT)");
    let counts = store
        .query_as(
            &format!(
                "SELECT {group} AS grp, COUNT(*) AS opened, {} AS page_viewed, {} AS ticked, {} AS signed, {} AS held,
                        {} AS sms, {} AS abandoned, {} AS expired, {} AS rejected
                 FROM analytics_signing_sessions WHERE {} GROUP BY grp ORDER BY grp",
                when("page_viewed_at_ms > 0"),
                when("ticked_at_ms > 0"),
                when("confirmed_at_ms > 0"),
                when("held_at_ms > 0"),
                when("sms_required_at_ms > 0"),
                when("outcome = 'abandoned'"),
                when("outcome = 'expired'"),
                when("outcome = 'rejected'"),
                scope("opened_at_ms"),
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await?;
    let times = store
        .query_as(
            &format!(
                "SELECT {group} AS grp, confirmed_at_ms - opened_at_ms AS ms FROM analytics_signing_sessions
                 WHERE confirmed_at_ms > 0 AND {}",
                scope("opened_at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await?;
    Ok((counts, times))
}

/// One group of charges.
#[derive(Debug, sqlx::FromRow)]
pub struct ChargeCounts {
    pub grp: String,
    pub charges: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rejected: i64,
    pub recovered: i64,
}

/// Charges due in the range, counted per outcome, grouped by `group` (an expression, or '').
pub async fn charge_stats(
    store: &EventStore,
    group: &str,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<ChargeCounts>, StoreError> {
    let when = |c: &str| format!("CAST(SUM(CASE WHEN {c} THEN 1 ELSE 0 END) AS BIGINT)");
    store
        .query_as(
            &format!(
                "SELECT {group} AS grp, COUNT(*) AS charges, {} AS succeeded, {} AS failed, {} AS rejected,
                        {} AS recovered
                 FROM analytics_charges WHERE {} GROUP BY grp ORDER BY grp",
                when("state = 'succeeded'"),
                when("state = 'failed'"),
                when("state = 'rejected'"),
                when("state = 'succeeded' AND failures > 0"),
                scope("due_at_ms"),
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// A contract's signing and end.
#[derive(Debug, sqlx::FromRow)]
pub struct Lifetime {
    pub signed_at_ms: i64,
    pub ended_at_ms: i64,
}

/// The contracts signed in the range: when each was signed and ended.
pub async fn lifetimes(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<Lifetime>, StoreError> {
    store
        .query_as(
            &format!("SELECT signed_at_ms, ended_at_ms FROM analytics_contracts WHERE {}", scope("signed_at_ms")),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// One channel's notices.
#[derive(Debug, sqlx::FromRow)]
pub struct ChannelCounts {
    pub channel: String,
    pub sent: i64,
    pub delivered: i64,
    pub opened: i64,
    pub converted: i64,
}

/// Notices recorded in the range, per channel that took them ('' for none yet).
pub async fn notice_channels(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<ChannelCounts>, StoreError> {
    let when = |c: &str| format!("CAST(SUM(CASE WHEN {c} THEN 1 ELSE 0 END) AS BIGINT)");
    store
        .query_as(
            &format!(
                "SELECT channel, COUNT(*) AS sent, {} AS delivered, {} AS opened, {} AS converted
                 FROM analytics_notices WHERE {} GROUP BY channel ORDER BY channel",
                when("delivered_at_ms > 0"),
                when("opened_at_ms > 0"),
                when("converted_at_ms > 0"),
                scope("recorded_at_ms"),
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// A sum of money per merchant and currency.
#[derive(Debug, sqlx::FromRow)]
pub struct MoneySum {
    pub merchant_id: String,
    pub currency: String,
    pub total: i64,
}

/// Succeeded charges whose outcome falls in the range, per merchant and currency; `usage_only`:
/// usage charges alone.
pub async fn charged(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
    usage_only: bool,
) -> Result<Vec<MoneySum>, StoreError> {
    let usage = if usage_only { "AND reason = 'usage'" } else { "" };
    store
        .query_as(
            &format!(
                "SELECT merchant_id, currency, CAST(SUM(amount) AS BIGINT) AS total FROM analytics_charges
                 WHERE state = 'succeeded' {usage} AND {} GROUP BY merchant_id, currency",
                scope("updated_at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// Succeeded refunds in the range, per merchant and currency.
pub async fn refunded(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<MoneySum>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT merchant_id, currency, CAST(SUM(amount) AS BIGINT) AS total FROM analytics_refunds
                 WHERE state = 'succeeded' AND {} GROUP BY merchant_id, currency",
                scope("at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// The fixed monthly amounts of contracts signed before `at_ms` and not ended by then (and
/// not suspended now), per merchant and currency.
pub async fn fixed_monthly(
    store: &EventStore,
    merchant: Option<&str>,
    at_ms: i64,
) -> Result<Vec<MoneySum>, StoreError> {
    store
        .query_as(
            "SELECT merchant_id, currency, CAST(SUM(monthly_amount) AS BIGINT) AS total FROM analytics_contracts
             WHERE ($1 = '' OR merchant_id = $1) AND signed_at_ms < $2 AND monthly_amount > 0
               AND (state = 'active' OR ended_at_ms >= $2)
             GROUP BY merchant_id, currency",
            &[Value::from(merchant.unwrap_or_default()), Value::Int(at_ms)],
        )
        .await
}

/// Contracts flagged unused and not ended.
/// Merchants with a risk review open.
pub async fn under_review(store: &EventStore, merchant: Option<&str>) -> Result<i64, StoreError> {
    count_of(
        store,
        &format!(
            "SELECT COUNT(DISTINCT merchant_id) AS n FROM analytics_merchant_reviews WHERE {WHOSE} AND resolved_at_ms = 0"
        ),
        merchant,
    )
    .await
}

/// The one count `sql` answers (its column named `n`), for `merchant` (`WHOSE`'s parameter).
async fn count_of(store: &EventStore, sql: &str, merchant: Option<&str>) -> Result<i64, StoreError> {
    #[derive(sqlx::FromRow)]
    struct N {
        n: i64,
    }
    let found: Vec<N> = store.query_as(sql, &whose(merchant)).await?;
    Ok(found.first().map(|n| n.n).unwrap_or(0))
}

/// Settlement batches closed in the range, per merchant and currency: fees, splits and what
/// was paid out.
#[derive(Debug, sqlx::FromRow)]
pub struct Settled {
    pub merchant_id: String,
    pub currency: String,
    pub fees: i64,
    pub splits: i64,
    pub net: i64,
}

pub async fn settled(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<Settled>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT merchant_id, currency, CAST(SUM(fees) AS BIGINT) AS fees, CAST(SUM(splits) AS BIGINT) AS splits,
                        CAST(SUM(net) AS BIGINT) AS net
                 FROM analytics_settlements WHERE {} GROUP BY merchant_id, currency",
                scope("closed_at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

pub async fn zombies(store: &EventStore, merchant: Option<&str>) -> Result<i64, StoreError> {
    count_of(
        store,
        &format!(
            "SELECT COUNT(*) AS n FROM analytics_contracts
             WHERE {WHOSE} AND zombie_flagged_at_ms > 0 AND state IN ('active', 'suspended')"
        ),
        merchant,
    )
    .await
}

/// A payer's succeeded charges in one currency.
#[derive(Debug, sqlx::FromRow)]
pub struct PayerTotal {
    pub payer_id: String,
    pub merchant_id: String,
    pub paid: i64,
    pub charges: i64,
    pub contracts: i64,
}

/// The payers who paid the most in `currency`, most first.
pub async fn top_payers(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
    currency: &str,
    limit: i64,
) -> Result<Vec<PayerTotal>, StoreError> {
    store
        .query_as(
            "SELECT c.payer_id, c.merchant_id, CAST(SUM(ch.amount) AS BIGINT) AS paid, COUNT(*) AS charges,
                    COUNT(DISTINCT c.contract_id) AS contracts
             FROM analytics_charges ch JOIN analytics_contracts c ON c.contract_id = ch.contract_id
             WHERE ch.state = 'succeeded' AND ch.currency = $4 AND ($1 = '' OR ch.merchant_id = $1)
               AND ch.updated_at_ms >= $2 AND ($3 = 0 OR ch.updated_at_ms < $3)
             GROUP BY c.payer_id, c.merchant_id
             ORDER BY paid DESC, c.payer_id LIMIT $5",
            &[
                Value::from(merchant.unwrap_or_default()),
                Value::Int(from_ms),
                Value::Int(until_ms),
                Value::from(currency),
                Value::Int(limit),
            ],
        )
        .await
}

/// A payer's last signing session that signed.
#[derive(Debug, sqlx::FromRow)]
pub struct SignedSession {
    pub channel: String,
    pub device_kind: String,
    pub opened_at_ms: i64,
    pub page_viewed_at_ms: i64,
    pub ticked_at_ms: i64,
    pub held_at_ms: i64,
    pub sms_required_at_ms: i64,
    pub confirmed_at_ms: i64,
}

pub async fn signed_session(
    store: &EventStore,
    merchant_id: &str,
    payer_id: &str,
) -> Result<Option<SignedSession>, StoreError> {
    let found: Vec<SignedSession> = store
        .query_as(
            "SELECT channel, device_kind, opened_at_ms, page_viewed_at_ms, ticked_at_ms, held_at_ms, sms_required_at_ms,
                    confirmed_at_ms
             FROM analytics_signing_sessions WHERE merchant_id = $1 AND payer_id = $2 AND outcome = 'signed'
             ORDER BY confirmed_at_ms DESC LIMIT 1",
            &[Value::from(merchant_id), Value::from(payer_id)],
        )
        .await?;
    Ok(found.into_iter().next())
}

/// A viewed session's industry and step times.
#[derive(Debug, sqlx::FromRow)]
pub struct Viewed {
    pub industry: String,
    pub page_viewed_at_ms: i64,
    pub ticked_at_ms: i64,
    pub confirmed_at_ms: i64,
}

/// The sessions opened in the range whose page was viewed, with their merchant's industry.
pub async fn viewed_sessions(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<Viewed>, StoreError> {
    store
        .query_as(
            "SELECT COALESCE(m.industry, '') AS industry, s.page_viewed_at_ms, s.ticked_at_ms, s.confirmed_at_ms
             FROM analytics_signing_sessions s LEFT JOIN analytics_merchants m ON m.merchant_id = s.merchant_id
             WHERE s.page_viewed_at_ms > 0 AND ($1 = '' OR s.merchant_id = $1)
               AND s.opened_at_ms >= $2 AND ($3 = 0 OR s.opened_at_ms < $3)",
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// Holds by merchant and rule, with what became of them.
#[derive(Debug, sqlx::FromRow)]
pub struct HoldOutcomes {
    pub merchant_id: String,
    pub rule: String,
    pub held: i64,
    pub by_payer: i64,
    pub by_operator: i64,
    pub rejected: i64,
    pub open: i64,
}

pub async fn hold_outcomes(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<HoldOutcomes>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT merchant_id, rule, COUNT(*) AS held,
                        SUM(CASE WHEN outcome = 'released' AND decided_by = 'payer' THEN 1 ELSE 0 END) AS by_payer,
                        SUM(CASE WHEN outcome = 'released' AND decided_by <> 'payer' THEN 1 ELSE 0 END) AS by_operator,
                        SUM(CASE WHEN outcome = 'rejected' THEN 1 ELSE 0 END) AS rejected,
                        SUM(CASE WHEN outcome = 'held' THEN 1 ELSE 0 END) AS open
                 FROM analytics_risk_holds WHERE {} GROUP BY merchant_id, rule ORDER BY merchant_id, rule",
                scope("held_at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// Complaints by merchant, kind, source and currency, with how they were answered.
#[derive(Debug, sqlx::FromRow)]
pub struct ComplaintOutcomes {
    pub merchant_id: String,
    pub kind: String,
    pub source: String,
    pub currency: String,
    pub filed: i64,
    pub in_time: i64,
    pub late: i64,
    pub missed: i64,
    pub open: i64,
    pub refunds: i64,
    pub rejections: i64,
    pub resolutions: i64,
    pub refunded: i64,
}

pub async fn complaint_outcomes(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<ComplaintOutcomes>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT merchant_id, kind, source, currency, COUNT(*) AS filed,
                        SUM(CASE WHEN answer <> '' AND late = 0 THEN 1 ELSE 0 END) AS in_time,
                        SUM(CASE WHEN answer <> '' AND late = 1 THEN 1 ELSE 0 END) AS late,
                        SUM(CASE WHEN missed_at_ms > 0 THEN 1 ELSE 0 END) AS missed,
                        SUM(CASE WHEN answer = '' THEN 1 ELSE 0 END) AS open,
                        SUM(CASE WHEN answer = 'refund' THEN 1 ELSE 0 END) AS refunds,
                        SUM(CASE WHEN answer = 'reject' THEN 1 ELSE 0 END) AS rejections,
                        SUM(CASE WHEN answer = 'resolve' THEN 1 ELSE 0 END) AS resolutions,
                        CAST(SUM(refunded) AS BIGINT) AS refunded
                 FROM analytics_complaints WHERE {} GROUP BY merchant_id, kind, source, currency
                 ORDER BY merchant_id, kind, source, currency",
                scope("filed_at_ms")
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}

/// Contracts signed through sessions opened in the range, per channel, and how many of them
/// have had a complaint.
#[derive(Debug, sqlx::FromRow)]
pub struct Disputes {
    pub grp: String,
    pub signed: i64,
    pub disputed: i64,
}

pub async fn disputes(
    store: &EventStore,
    merchant: Option<&str>,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<Disputes>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT s.channel AS grp, COUNT(*) AS signed,
                        SUM(CASE WHEN EXISTS (SELECT 1 FROM analytics_complaints c WHERE c.contract_id = s.contract_id)
                                 THEN 1 ELSE 0 END) AS disputed
                 FROM analytics_signing_sessions s
                 WHERE ($1 = '' OR s.merchant_id = $1) AND s.opened_at_ms >= $2 AND ($3 = 0 OR s.opened_at_ms < $3)
                   AND s.outcome = 'signed'
                 GROUP BY s.channel"
            ),
            &scoped(merchant, from_ms, until_ms),
        )
        .await
}
