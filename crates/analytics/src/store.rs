//! The analytics tables, and every statement on them (`migrations/` holds their schema):
//! contracts and charges with their states, platform-wide and per-merchant counters, and the
//! API keys (kept by `runtime::auth`).
use autodebit_eventstore::{EventStore, Migrations, StoreError, Tx, Value};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("analytics", 5000..6000);

// ---------------------------------------------------------------------------------------------
// Projection writes

/// Adds `by` to the platform-wide counter `name`.
pub async fn bump(tx: &mut Tx, name: &str, by: i64) -> Result<(), StoreError> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO analytics_counters (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = analytics_counters.value + excluded.value",
        &[Value::from(name), Value::Int(by)],
    )
    .await?;
    Ok(())
}

/// The statements the projector writes rows with, one per run of events that need the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// `[contract_id, merchant_id, signed_at_ms]`
    ContractSigned,
    /// `[contract_id, state, ended_at_ms]`
    ContractState,
    /// `[charge_id, contract_id, merchant_id, amount, currency, due_at_ms]`
    ChargeScheduled,
    /// `[charge_id, state, code, at_ms]`
    ChargeOutcome,
}

impl Statement {
    fn sql(self, rows: &str) -> String {
        match self {
            Statement::ContractSigned => format!(
                "INSERT INTO analytics_contracts (contract_id, merchant_id, state, signed_at_ms, ended_at_ms)
                 SELECT value->>0, value->>1, 'active', CAST(value->>2 AS BIGINT), 0 FROM {rows} WHERE true
                 ON CONFLICT (contract_id) DO NOTHING"
            ),
            Statement::ContractState => format!(
                "UPDATE analytics_contracts SET state = v.state, ended_at_ms = v.at
                 FROM (SELECT value->>0 AS id, value->>1 AS state, CAST(value->>2 AS BIGINT) AS at FROM {rows}) v
                 WHERE analytics_contracts.contract_id = v.id"
            ),
            Statement::ChargeScheduled => format!(
                "INSERT INTO analytics_charges
                   (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
                 SELECT value->>0, value->>1, value->>2, CAST(value->>3 AS BIGINT), value->>4, 'scheduled', '',
                        CAST(value->>5 AS BIGINT), CAST(value->>5 AS BIGINT)
                 FROM {rows} WHERE true
                 ON CONFLICT (charge_id) DO NOTHING"
            ),
            // A charge's row exists by now: its `ChargeScheduled` comes first in its stream,
            // the log keeps stream order, and the run before this one was written first.
            Statement::ChargeOutcome => format!(
                "UPDATE analytics_charges SET state = v.state, code = v.code, updated_at_ms = v.at
                 FROM (SELECT value->>0 AS id, value->>1 AS state, value->>2 AS code, CAST(value->>3 AS BIGINT) AS at
                       FROM {rows}) v
                 WHERE analytics_charges.charge_id = v.id"
            ),
        }
    }

    /// Whether it updates rows by their key (the row's first item), so that of two rows with
    /// one key only the later may be written.
    fn updates(self) -> bool {
        matches!(self, Statement::ContractState | Statement::ChargeOutcome)
    }
}

/// Rows waiting to be written by one statement.
#[derive(Default)]
pub struct Run {
    statement: Option<Statement>,
    rows: Vec<serde_json::Value>,
}

impl Run {
    /// Adds a row, first writing the rows of another statement that came before it.
    pub async fn push(&mut self, tx: &mut Tx, statement: Statement, row: serde_json::Value) -> Result<(), StoreError> {
        if self.statement != Some(statement) {
            self.flush(tx).await?;
            self.statement = Some(statement);
        }
        self.rows.push(row);
        Ok(())
    }

    /// Writes the rows waiting.
    pub async fn flush(&mut self, tx: &mut Tx) -> Result<(), StoreError> {
        let (Some(statement), false) = (self.statement.take(), self.rows.is_empty()) else { return Ok(()) };
        let mut rows = std::mem::take(&mut self.rows);
        if statement.updates() {
            let mut seen = std::collections::HashSet::new();
            rows.reverse();
            rows.retain(|r| seen.insert(r[0].as_str().unwrap_or_default().to_string()));
        }
        tx.execute(&statement.sql(&tx.kind().json_rows(1)), &[Value::from(serde_json::Value::Array(rows).to_string())])
            .await?;
        Ok(())
    }
}

/// A charge rejected: at issue it has no row yet, after scheduling it has one.
pub struct Rejected<'a> {
    pub charge_id: &'a str,
    pub contract_id: &'a str,
    pub merchant_id: &'a str,
    pub amount: i64,
    pub currency: String,
    pub rule: &'a str,
    pub due_at_ms: i64,
    pub rejected_at_ms: i64,
}

/// Writes a rejected charge's row.
pub async fn save_rejected(tx: &mut Tx, r: Rejected<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO analytics_charges
           (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, 'rejected', $6, $7, $8)
         ON CONFLICT (charge_id) DO UPDATE SET state = 'rejected', code = excluded.code,
           updated_at_ms = excluded.updated_at_ms",
        &[
            Value::from(r.charge_id),
            Value::from(r.contract_id),
            Value::from(r.merchant_id),
            Value::Int(r.amount),
            Value::from(r.currency),
            Value::from(r.rule),
            Value::Int(r.due_at_ms),
            Value::Int(r.rejected_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Counts notices towards each merchant's `notices_recorded`, through the contract each is
/// about; `notices` holds one `[contract_id]` per notice.
pub async fn count_merchant_notices(tx: &mut Tx, notices: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if notices.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO analytics_merchant_counters (merchant_id, name, value)
             SELECT c.merchant_id, 'notices_recorded', COUNT(*)
             FROM {} v JOIN analytics_contracts c ON c.contract_id = v.value->>0
             WHERE true GROUP BY c.merchant_id
             ON CONFLICT (merchant_id, name)
               DO UPDATE SET value = analytics_merchant_counters.value + excluded.value",
            tx.kind().json_rows(1)
        ),
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
