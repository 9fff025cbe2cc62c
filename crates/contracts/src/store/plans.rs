//! `contracts_plans`: each plan's terms as encoded `PlanTerms` bytes, for reads and lists.
use autodebit_domain::MerchantId;
use autodebit_eventstore::{EventStore, StoreError, Tx, Value};

/// A plan as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct PlanRow {
    pub plan_id: String,
    pub merchant_id: String,
    /// Encoded `PlanTerms`.
    pub terms: Vec<u8>,
    pub created_at_ms: i64,
}

pub async fn insert(
    tx: &mut Tx,
    plan_id: &str,
    merchant: &MerchantId,
    terms: Vec<u8>,
    created_at_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contracts_plans (plan_id, merchant_id, terms, created_at_ms) VALUES ($1, $2, $3, $4)",
        &[Value::from(plan_id), Value::from(merchant.to_string()), Value::Bytes(terms), Value::Int(created_at_ms)],
    )
    .await?;
    Ok(())
}

pub async fn get(store: &EventStore, plan_id: &str) -> Result<Option<PlanRow>, StoreError> {
    let rows: Vec<PlanRow> = store
        .query_as(
            "SELECT plan_id, merchant_id, terms, created_at_ms FROM contracts_plans WHERE plan_id = $1",
            &[Value::from(plan_id)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// A merchant's plans after `after` in id order; at most `limit`.
pub async fn list(
    store: &EventStore,
    merchant: &MerchantId,
    after: &str,
    limit: i64,
) -> Result<Vec<PlanRow>, StoreError> {
    store
        .query_as(
            "SELECT plan_id, merchant_id, terms, created_at_ms FROM contracts_plans
             WHERE merchant_id = $1 AND plan_id > $2 ORDER BY plan_id LIMIT $3",
            &[Value::from(merchant.to_string()), Value::from(after), Value::Int(limit)],
        )
        .await
}
