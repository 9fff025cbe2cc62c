//! `scheduler_risk_holds`: the charges a risk rule held, from their `ChargeHeld` until released
//! and scheduled or rejected. Written in the transaction that appends each step.
use super::Db;
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
        insert(tx, &h).await?;
        n += 1;
    }
    Ok(n)
}

async fn insert(tx: &mut Tx, h: &pb::ChargeHeld) -> anyhow::Result<()> {
    let amount = h.amount.clone().unwrap_or_default();
    tx.execute(
        &format!(
            "INSERT INTO scheduler_risk_holds ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, '', '', 0, 0)
             ON CONFLICT (charge_id) DO NOTHING"
        ),
        &[
            Value::from(h.charge_id.as_str()),
            Value::from(h.contract_id.as_str()),
            Value::from(h.merchant_id.as_str()),
            Value::from(h.payer_id.as_str()),
            Value::Int(amount.minor_units),
            Value::from(amount.currency),
            Value::from(h.rule.as_str()),
            Value::from(h.detail.as_str()),
            Value::Int(h.mean_minor_units),
            Value::Int(i64::from(h.threshold_percent)),
            Value::Int(i64::from(h.history_count)),
            Value::from(h.token.as_str()),
            Value::Int(h.held_at_ms),
            Value::Int(h.expires_at_ms),
            Value::from(HELD),
        ],
    )
    .await?;
    Ok(())
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
    let mut sql = format!("SELECT {COLUMNS} FROM scheduler_risk_holds WHERE 1 = 1");
    let mut params = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, v: Value| {
        params.push(v);
        sql.push_str(&clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(m) = f.merchant_id {
        bind(&mut sql, " AND merchant_id = ?", Value::from(m));
    }
    if let Some(c) = f.contract_id {
        bind(&mut sql, " AND contract_id = ?", Value::from(c));
    }
    if let Some(s) = f.state {
        bind(&mut sql, " AND state = ?", Value::from(s));
    }
    if let Some((at, id)) = f.before {
        bind(&mut sql, " AND (held_at_ms < ?", Value::Int(at));
        bind(&mut sql, " OR (held_at_ms = ?", Value::Int(at));
        bind(&mut sql, " AND charge_id < ?))", Value::from(id));
    }
    bind(&mut sql, " ORDER BY held_at_ms DESC, charge_id DESC LIMIT ?", Value::Int(f.limit));
    Ok(db.query_as(&sql, &params).await?)
}
