//! The notifier's tables, and every statement on them (`migrations/` holds their schema):
//!
//! - `notifier_notices`: every notice recorded, by contract;
//! - `notifier_contracts`: each contract's merchant, for who may read its notices;
//! - `notifier_api_keys`: the API keys (kept by `runtime::auth`).
use autodebit_eventstore::{EventStore, Migrations, StoreError, Tx, Value};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("notifier", 4000..5000);

/// A notice as `notifier_notices` keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeRow {
    pub notice_id: String,
    /// `NoticeKind` as a number.
    pub kind: i64,
    pub channel: String,
    pub recipient: String,
    pub contract_id: String,
    /// Empty for a notice about no charge.
    pub charge_id: String,
    pub text: String,
    pub recorded_at_ms: i64,
}

/// A contract's notices, in the order they were recorded.
pub async fn notices_of(store: &EventStore, contract_id: &str) -> Result<Vec<NoticeRow>, StoreError> {
    store
        .query_as(
            "SELECT notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms
             FROM notifier_notices WHERE contract_id = $1 ORDER BY recorded_at_ms, notice_id",
            &[Value::from(contract_id)],
        )
        .await
}

#[derive(sqlx::FromRow)]
struct Owner {
    merchant_id: String,
}

/// The merchant of a contract the notifier has seen signed.
pub async fn merchant_of(store: &EventStore, contract_id: &str) -> Result<Option<String>, StoreError> {
    let found: Vec<Owner> = store
        .query_as("SELECT merchant_id FROM notifier_contracts WHERE contract_id = $1", &[Value::from(contract_id)])
        .await?;
    Ok(found.into_iter().next().map(|o| o.merchant_id))
}

/// Keeps each `(contract_id, merchant_id)` pair; a contract already kept stays as it is.
pub async fn save_owners(tx: &mut Tx, owners: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if owners.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_contracts (contract_id, merchant_id)
             SELECT value->>0, value->>1 FROM {} WHERE true ON CONFLICT (contract_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(owners).to_string())],
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Recipient {
    recipient: String,
}

/// Who the notice of kind `kind` about `contract_id` went to, if one was recorded.
pub async fn recipient_of(tx: &mut Tx, contract_id: &str, kind: i64) -> Result<Option<String>, StoreError> {
    let found: Vec<Recipient> = tx
        .query_as(
            "SELECT recipient FROM notifier_notices WHERE contract_id = $1 AND kind = $2",
            &[Value::from(contract_id), Value::Int(kind)],
        )
        .await?;
    Ok(found.into_iter().next().map(|r| r.recipient))
}

/// Writes notices in one statement, on `channel`; each row is `[notice_id, kind, recipient,
/// contract_id, charge_id, text, recorded_at_ms]`. A notice recorded already stays as it is.
pub async fn insert_notices(tx: &mut Tx, rows: Vec<serde_json::Value>, channel: &str) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_notices (notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms)
             SELECT value->>0, CAST(value->>1 AS BIGINT), $2, value->>2, value->>3, value->>4, value->>5,
                    CAST(value->>6 AS BIGINT)
             FROM {} WHERE true
             ON CONFLICT (notice_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string()), Value::from(channel)],
    )
    .await?;
    Ok(())
}
