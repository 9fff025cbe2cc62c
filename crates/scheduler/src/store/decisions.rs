//! `scheduler_risk_decisions`: every risk decision, for the audit. Sign-time decisions come
//! from the signing sessions' steps in the log; charge-time ones are written with each step
//! of a hold.
use super::{Db, Query};
use autodebit_eventstore::{Tx, Value};

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Decision {
    pub decision_id: String,
    pub at_ms: i64,
    pub merchant_id: String,
    pub payer_id: String,
    pub contract_id: String,
    pub session_id: String,
    pub charge_id: String,
    pub rule: String,
    /// A JSON object of the rule's inputs, by name.
    pub inputs: String,
    pub outcome: String,
    pub detail: String,
}

const COLUMNS: &str =
    "decision_id, at_ms, merchant_id, payer_id, contract_id, session_id, charge_id, rule, inputs, outcome, detail";

/// Inputs by name as the table keeps them.
pub fn inputs_json<'a>(inputs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        inputs.into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v))).collect();
    serde_json::Value::Object(map).to_string()
}

/// Records a decision once (its id says which).
pub async fn insert(tx: &mut Tx, d: &Decision) -> anyhow::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO scheduler_risk_decisions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (decision_id) DO NOTHING"
        ),
        &[
            Value::from(d.decision_id.as_str()),
            Value::Int(d.at_ms),
            Value::from(d.merchant_id.as_str()),
            Value::from(d.payer_id.as_str()),
            Value::from(d.contract_id.as_str()),
            Value::from(d.session_id.as_str()),
            Value::from(d.charge_id.as_str()),
            Value::from(d.rule.as_str()),
            Value::from(d.inputs.as_str()),
            Value::from(d.outcome.as_str()),
            Value::from(d.detail.as_str()),
        ],
    )
    .await?;
    Ok(())
}

/// A signing session signed `contract_id`: its decisions are the contract's too.
pub async fn session_signed(tx: &mut Tx, session_id: &str, contract_id: &str) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE scheduler_risk_decisions SET contract_id = $2 WHERE session_id = $1",
        &[Value::from(session_id), Value::from(contract_id)],
    )
    .await?;
    Ok(())
}

/// What `ListRiskDecisions` asks for: any of merchant, contract and payer, a time range.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub merchant_id: Option<&'a str>,
    pub contract_id: Option<&'a str>,
    pub payer_id: Option<&'a str>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Decisions before this (at_ms, decision_id), newest first.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

pub async fn list(db: &mut Db<'_>, f: Filter<'_>) -> anyhow::Result<Vec<Decision>> {
    let mut q = Query::new(format!("SELECT {COLUMNS} FROM scheduler_risk_decisions WHERE 1 = 1"));
    if let Some(m) = f.merchant_id {
        q.push(" AND merchant_id = ?", Value::from(m));
    }
    if let Some(c) = f.contract_id {
        q.push(" AND contract_id = ?", Value::from(c));
    }
    if let Some(p) = f.payer_id {
        q.push(" AND payer_id = ?", Value::from(p));
    }
    if let Some(t) = f.since_ms {
        q.push(" AND at_ms >= ?", Value::Int(t));
    }
    if let Some(t) = f.until_ms {
        q.push(" AND at_ms < ?", Value::Int(t));
    }
    q.page("at_ms", "decision_id", f.before, f.limit);
    Ok(db.query_as(&q.sql, &q.params).await?)
}
