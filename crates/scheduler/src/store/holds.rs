//! `scheduler_risk_holds`: the charges a risk rule held, from their `ChargeHeld` until released
//! and scheduled or rejected. Written in the transaction that appends each step.
use super::decisions::{Decision, inputs_json};
use super::{Db, Query};
use autodebit_eventstore::{StreamAppend, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use prost::Message;

/// A hold's state.
pub const HELD: &str = "held";
/// Approved, waiting for the charge window.
pub const RELEASED: &str = "released";
pub const SCHEDULED: &str = "scheduled";
pub const REJECTED: &str = "rejected";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HoldRow {
    pub charge_id: String,
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub amount: i64,
    pub currency: String,
    pub rule: String,
    pub detail: String,
    pub mean: i64,
    pub threshold_percent: i64,
    pub history_count: i64,
    pub token: String,
    pub held_at_ms: i64,
    pub expires_at_ms: i64,
    pub state: String,
    pub released_by: String,
    pub note: String,
    pub charge_at_ms: i64,
    pub decided_at_ms: i64,
}

const COLUMNS: &str = "charge_id, contract_id, merchant_id, payer_id, amount, currency, rule, detail, mean, \
                       threshold_percent, history_count, token, held_at_ms, expires_at_ms, state, released_by, note, \
                       charge_at_ms, decided_at_ms";

/// Records the holds among appends just made and accepted: each that opens with a
/// `ChargeHeld`.
pub async fn record(tx: &mut Tx, accepted: &[&StreamAppend]) -> anyhow::Result<usize> {
    let mut n = 0;
    for append in accepted.iter().copied() {
        let Some(first) = append.events.first().filter(|e| e.event_type == "ChargeHeld") else { continue };
        let Ok(pb::Event { kind: Some(EventKind::ChargeHeld(h)) }) = pb::Event::decode(first.payload.as_slice()) else {
            continue;
        };
        let row = row_of(&h);
        insert(tx, &row).await?;
        super::decisions::insert(tx, &decision(&row, "held", "held", &row.detail, row.held_at_ms)).await?;
        n += 1;
    }
    Ok(n)
}

/// A hold's row as its `ChargeHeld` opens it.
fn row_of(h: &pb::ChargeHeld) -> HoldRow {
    let amount = h.amount.clone().unwrap_or_default();
    HoldRow {
        charge_id: h.charge_id.clone(),
        contract_id: h.contract_id.clone(),
        merchant_id: h.merchant_id.clone(),
        payer_id: h.payer_id.clone(),
        amount: amount.minor_units,
        currency: amount.currency,
        rule: h.rule.clone(),
        detail: h.detail.clone(),
        mean: h.mean_minor_units,
        threshold_percent: i64::from(h.threshold_percent),
        history_count: i64::from(h.history_count),
        token: h.token.clone(),
        held_at_ms: h.held_at_ms,
        expires_at_ms: h.expires_at_ms,
        state: HELD.to_string(),
        released_by: String::new(),
        note: String::new(),
        charge_at_ms: 0,
        decided_at_ms: 0,
    }
}

async fn insert(tx: &mut Tx, r: &HoldRow) -> anyhow::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO scheduler_risk_holds ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, '', '', 0, 0)
             ON CONFLICT (charge_id) DO NOTHING"
        ),
        &[
            Value::from(r.charge_id.as_str()),
            Value::from(r.contract_id.as_str()),
            Value::from(r.merchant_id.as_str()),
            Value::from(r.payer_id.as_str()),
            Value::Int(r.amount),
            Value::from(r.currency.as_str()),
            Value::from(r.rule.as_str()),
            Value::from(r.detail.as_str()),
            Value::Int(r.mean),
            Value::Int(r.threshold_percent),
            Value::Int(r.history_count),
            Value::from(r.token.as_str()),
            Value::Int(r.held_at_ms),
            Value::Int(r.expires_at_ms),
            Value::from(r.state.as_str()),
        ],
    )
    .await?;
    Ok(())
}

/// The audit's record of a step of a hold (`step`: held, released, rejected): the hold's rule
/// and inputs, and what became of it.
pub fn decision(row: &HoldRow, step: &str, outcome: &str, detail: &str, at_ms: i64) -> Decision {
    Decision {
        decision_id: format!("{}/{step}", row.charge_id),
        at_ms,
        merchant_id: row.merchant_id.clone(),
        payer_id: row.payer_id.clone(),
        contract_id: row.contract_id.clone(),
        charge_id: row.charge_id.clone(),
        rule: row.rule.clone(),
        inputs: inputs_json([
            ("amount", row.amount.to_string()),
            ("mean", row.mean.to_string()),
            ("threshold_percent", row.threshold_percent.to_string()),
            ("history_count", row.history_count.to_string()),
        ]),
        outcome: outcome.to_string(),
        detail: detail.to_string(),
        session_id: String::new(),
    }
}

pub async fn by_charge(db: &mut Db<'_>, charge_id: &str) -> anyhow::Result<Option<HoldRow>> {
    let rows: Vec<HoldRow> = db
        .query_as(
            &format!("SELECT {COLUMNS} FROM scheduler_risk_holds WHERE charge_id = $1"),
            &[Value::from(charge_id)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

pub async fn by_token(db: &mut Db<'_>, token: &str) -> anyhow::Result<Option<HoldRow>> {
    let rows: Vec<HoldRow> = db
        .query_as(&format!("SELECT {COLUMNS} FROM scheduler_risk_holds WHERE token = $1"), &[Value::from(token)])
        .await?;
    Ok(rows.into_iter().next())
}

/// A hold's new state, with who decided, when, and (released) when it is to be charged.
pub async fn set_state(
    tx: &mut Tx,
    charge_id: &str,
    state: &str,
    released_by: Option<(&str, &str)>,
    charge_at_ms: i64,
    at_ms: i64,
) -> anyhow::Result<()> {
    let (by, note) = released_by.unwrap_or(("", ""));
    tx.execute(
        "UPDATE scheduler_risk_holds SET state = $2,
           released_by = CASE WHEN $3 = '' THEN released_by ELSE $3 END,
           note = CASE WHEN $4 = '' THEN note ELSE $4 END,
           charge_at_ms = CASE WHEN $5 = 0 THEN charge_at_ms ELSE $5 END,
           decided_at_ms = $6
         WHERE charge_id = $1",
        &[
            Value::from(charge_id),
            Value::from(state),
            Value::from(by),
            Value::from(note),
            Value::Int(charge_at_ms),
            Value::Int(at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Holds whose moment has come by `now`: held ones past their expiry, and released ones whose
/// charge time has passed (only when `window_open`). Oldest first, at most `limit`.
pub async fn due(db: &mut Db<'_>, now_ms: i64, window_open: bool, limit: i64) -> anyhow::Result<Vec<HoldRow>> {
    let rows: Vec<HoldRow> = db
        .query_as(
            &format!(
                "SELECT {COLUMNS} FROM scheduler_risk_holds
                 WHERE (state = 'held' AND expires_at_ms <= $1)
                    OR (state = 'released' AND charge_at_ms <= $1 AND $2 = 1)
                 ORDER BY held_at_ms LIMIT $3"
            ),
            &[Value::Int(now_ms), Value::Int(i64::from(window_open)), Value::Int(limit)],
        )
        .await?;
    Ok(rows)
}

/// What `ListHeldCharges` asks for.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub merchant_id: Option<&'a str>,
    pub contract_id: Option<&'a str>,
    pub state: Option<&'a str>,
    /// Newer holds than this (held_at_ms, charge_id) come first; the page goes on after it.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// Holds, newest first.
pub async fn list(db: &mut Db<'_>, f: Filter<'_>) -> anyhow::Result<Vec<HoldRow>> {
    let mut q = Query::new(format!("SELECT {COLUMNS} FROM scheduler_risk_holds WHERE 1 = 1"));
    if let Some(m) = f.merchant_id {
        q.push(" AND merchant_id = ?", Value::from(m));
    }
    if let Some(c) = f.contract_id {
        q.push(" AND contract_id = ?", Value::from(c));
    }
    if let Some(s) = f.state {
        q.push(" AND state = ?", Value::from(s));
    }
    q.page("held_at_ms", "charge_id", f.before, f.limit);
    Ok(db.query_as(&q.sql, &q.params).await?)
}
