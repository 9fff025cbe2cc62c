//! `contracts_merchants` (status by merchant) and `contracts_api_keys`.
use autodebit_domain::MerchantId;
use autodebit_domain::merchant::MerchantStatus;
use autodebit_eventstore::{EventStore, StoreError, Tx, Value};

/// A status as the table stores it.
pub fn status_name(s: MerchantStatus) -> &'static str {
    match s {
        MerchantStatus::Applied => "applied",
        MerchantStatus::UnderReview => "under_review",
        MerchantStatus::Approved => "approved",
        MerchantStatus::Rejected => "rejected",
        MerchantStatus::Suspended => "suspended",
    }
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    status: String,
}

#[derive(sqlx::FromRow)]
struct MerchantIdRow {
    merchant_id: String,
}

pub async fn upsert(
    tx: &mut Tx,
    id: &MerchantId,
    status: MerchantStatus,
    applied_at_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contracts_merchants (merchant_id, status, applied_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id) DO UPDATE SET status = excluded.status",
        &[Value::from(id.to_string()), Value::from(status_name(status)), Value::Int(applied_at_ms)],
    )
    .await?;
    Ok(())
}

pub async fn insert_api_key(
    tx: &mut Tx,
    key_id: &str,
    merchant: &MerchantId,
    secret_sha256: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contracts_api_keys (key_id, merchant_id, secret_sha256, revoked) VALUES ($1, $2, $3, 0)",
        &[Value::from(key_id), Value::from(merchant.to_string()), Value::from(secret_sha256)],
    )
    .await?;
    Ok(())
}

pub async fn revoke_api_key(tx: &mut Tx, key_id: &str) -> Result<(), StoreError> {
    tx.execute("UPDATE contracts_api_keys SET revoked = 1 WHERE key_id = $1", &[Value::from(key_id)]).await?;
    Ok(())
}

/// The merchant's status as stored; `None` for a merchant that never applied.
pub async fn status(store: &EventStore, id: &MerchantId) -> Result<Option<String>, StoreError> {
    let rows: Vec<StatusRow> = store
        .query_as("SELECT status FROM contracts_merchants WHERE merchant_id = $1", &[Value::from(id.to_string())])
        .await?;
    Ok(rows.into_iter().next().map(|r| r.status))
}

/// Merchants after `after` in id order, with status `status` ("": any); at most `limit`.
pub async fn list(store: &EventStore, after: &str, status: &str, limit: i64) -> Result<Vec<String>, StoreError> {
    let rows: Vec<MerchantIdRow> = store
        .query_as(
            "SELECT merchant_id FROM contracts_merchants WHERE merchant_id > $1 AND ($2 = '' OR status = $2)
             ORDER BY merchant_id LIMIT $3",
            &[Value::from(after), Value::from(status), Value::Int(limit)],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.merchant_id).collect())
}
