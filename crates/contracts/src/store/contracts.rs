//! `contracts_contracts` (one row per contract) and `contracts_idempotency_keys`.
use autodebit_domain::contract::{Contract, ContractStatus};
use autodebit_domain::{ContractId, MerchantId};
use autodebit_eventstore::{EventStore, StoreError, Tx, Value};

const STATUSES: [ContractStatus; 4] =
    [ContractStatus::Active, ContractStatus::Suspended, ContractStatus::Terminated, ContractStatus::Expired];

/// A status as the table stores it.
pub fn status_name(s: ContractStatus) -> &'static str {
    match s {
        ContractStatus::Active => "active",
        ContractStatus::Suspended => "suspended",
        ContractStatus::Terminated => "terminated",
        ContractStatus::Expired => "expired",
    }
}

/// The status a stored name stands for.
pub fn status_of(name: &str) -> Option<ContractStatus> {
    STATUSES.into_iter().find(|s| status_name(*s) == name)
}

#[derive(sqlx::FromRow)]
struct ContractIdRow {
    contract_id: String,
}

fn ids(rows: Vec<ContractIdRow>) -> Vec<String> {
    rows.into_iter().map(|r| r.contract_id).collect()
}

/// Adds a newly signed contract. A merchant contract code the merchant already used fails
/// as a unique violation (`super::is_unique_violation`).
pub async fn insert(tx: &mut Tx, c: &Contract) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contracts_contracts (contract_id, merchant_id, merchant_contract_code, payer_id, plan_id,
           state, signed_at_ms, expires_at_ms, last_success_at_ms, consecutive_failures, zombie_flagged_at_ms,
           expiry_warned_at_ms)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, 0, 0, 0, 0)",
        &[
            Value::from(c.contract_id.to_string()),
            Value::from(c.merchant_id.to_string()),
            Value::from(&c.merchant_contract_code),
            Value::from(c.payer_id.to_string()),
            Value::from(&c.plan_id),
            Value::Int(c.signed_at.timestamp_millis()),
            Value::Int(c.expires_at.map(|t| t.timestamp_millis()).unwrap_or(0)),
        ],
    )
    .await?;
    Ok(())
}

pub async fn set_status(tx: &mut Tx, id: ContractId, status: ContractStatus) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE contracts_contracts SET state = $1 WHERE contract_id = $2",
        &[Value::from(status_name(status)), Value::from(id.to_string())],
    )
    .await?;
    Ok(())
}

pub async fn set_zombie_flagged(tx: &mut Tx, id: ContractId, at_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE contracts_contracts SET zombie_flagged_at_ms = $1 WHERE contract_id = $2",
        &[Value::Int(at_ms), Value::from(id.to_string())],
    )
    .await?;
    Ok(())
}

pub async fn set_expiry_warned(tx: &mut Tx, id: ContractId, at_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE contracts_contracts SET expiry_warned_at_ms = $1 WHERE contract_id = $2",
        &[Value::Int(at_ms), Value::from(id.to_string())],
    )
    .await?;
    Ok(())
}

/// The contract the merchant knows by `code`.
pub async fn by_code(store: &EventStore, merchant: &MerchantId, code: &str) -> Result<Option<String>, StoreError> {
    let rows: Vec<ContractIdRow> = store
        .query_as(
            "SELECT contract_id FROM contracts_contracts WHERE merchant_id = $1 AND merchant_contract_code = $2",
            &[Value::from(merchant.to_string()), Value::from(code)],
        )
        .await?;
    Ok(ids(rows).into_iter().next())
}

/// A merchant's contracts after `after` in id order, filtered by status, payer and plan ("":
/// any); at most `limit`.
pub async fn list(
    store: &EventStore,
    merchant: &MerchantId,
    after: &str,
    status: &str,
    payer: &str,
    plan: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = store
        .query_as(
            "SELECT contract_id FROM contracts_contracts
             WHERE merchant_id = $1 AND contract_id > $2
               AND ($3 = '' OR state = $3) AND ($4 = '' OR payer_id = $4) AND ($5 = '' OR plan_id = $5)
             ORDER BY contract_id LIMIT $6",
            &[
                Value::from(merchant.to_string()),
                Value::from(after),
                Value::from(status),
                Value::from(payer),
                Value::from(plan),
                Value::Int(limit),
            ],
        )
        .await?;
    Ok(ids(rows))
}

/// The contract a sign request under this idempotency key signed, if one did.
pub async fn signed_under_key(
    store: &EventStore,
    merchant: &MerchantId,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let rows: Vec<ContractIdRow> = store
        .query_as(
            "SELECT contract_id FROM contracts_idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2",
            &[Value::from(merchant.as_str()), Value::from(key)],
        )
        .await?;
    Ok(ids(rows).into_iter().next())
}

/// Claims an idempotency key for contract `id`; `false` when another request holds it.
pub async fn claim_key(tx: &mut Tx, merchant: &MerchantId, key: &str, id: ContractId) -> Result<bool, StoreError> {
    let claimed = tx
        .execute(
            "INSERT INTO contracts_idempotency_keys (merchant_id, idempotency_key, contract_id) VALUES ($1, $2, $3)
             ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
            &[Value::from(merchant.as_str()), Value::from(key), Value::from(id.to_string())],
        )
        .await?;
    Ok(claimed > 0)
}

// === the clean-up's sweeps (`domain::validity`, `domain::zombie`) ===

/// Contracts not ended and not yet warned whose validity ends after `now_ms` and by
/// `horizon_ms` (`validity::warning_horizon`): those due their expiry warning.
pub async fn due_for_warning(
    store: &EventStore,
    now_ms: i64,
    horizon_ms: i64,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    // The first three terms are `contracts_contracts_unwarned`'s predicate, word for word:
    // written otherwise, the planner cannot use that index.
    let rows = store
        .query_as(
            "SELECT contract_id FROM contracts_contracts
             WHERE state IN ('active', 'suspended') AND expiry_warned_at_ms = 0 AND expires_at_ms > 0
               AND expires_at_ms > $1 AND expires_at_ms <= $2
             ORDER BY expires_at_ms LIMIT $3",
            &[Value::Int(now_ms), Value::Int(horizon_ms), Value::Int(limit)],
        )
        .await?;
    Ok(ids(rows))
}

/// Contracts not ended whose validity ran out by `now_ms`.
pub async fn due_to_expire(store: &EventStore, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
    let rows = store
        .query_as(
            "SELECT contract_id FROM contracts_contracts
             WHERE state IN ('active', 'suspended') AND expires_at_ms > 0 AND expires_at_ms <= $1 LIMIT $2",
            &[Value::Int(now_ms), Value::Int(limit)],
        )
        .await?;
    Ok(ids(rows))
}

/// An active unflagged contract and the moment it went idle.
#[derive(Debug, sqlx::FromRow)]
pub struct Idle {
    pub contract_id: String,
    pub idle_since_ms: i64,
}

/// Active unflagged contracts idle since `cutoff_ms` or earlier.
pub async fn idle_since(store: &EventStore, cutoff_ms: i64, limit: i64) -> Result<Vec<Idle>, StoreError> {
    // The WHERE's expression is the one `contracts_contracts_idle` indexes, word for word:
    // written otherwise, the planner cannot use that index.
    store
        .query_as(
            "SELECT contract_id,
                    CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END
                      AS idle_since_ms
             FROM contracts_contracts
             WHERE state = 'active' AND zombie_flagged_at_ms = 0
               AND (CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END) <= $1
             LIMIT $2",
            &[Value::Int(cutoff_ms), Value::Int(limit)],
        )
        .await
}

/// Contracts not ended, flagged at `cutoff_ms` or earlier.
pub async fn flagged_by(store: &EventStore, cutoff_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
    let rows = store
        .query_as(
            "SELECT contract_id FROM contracts_contracts
             WHERE state IN ('active', 'suspended') AND zombie_flagged_at_ms > 0 AND zombie_flagged_at_ms <= $1 LIMIT $2",
            &[Value::Int(cutoff_ms), Value::Int(limit)],
        )
        .await?;
    Ok(ids(rows))
}

// === charge outcomes ===

/// A contract's run of failed charges, and its status.
#[derive(Debug, sqlx::FromRow)]
pub struct Failures {
    pub consecutive_failures: i64,
    pub state: String,
}

/// Counts one more failed charge of contract `id`; `None` for a contract the table lacks.
pub async fn count_failure(tx: &mut Tx, id: &str) -> Result<Option<Failures>, StoreError> {
    let rows: Vec<Failures> = tx
        .query_as(
            "UPDATE contracts_contracts SET consecutive_failures = consecutive_failures + 1
             WHERE contract_id = $1 RETURNING consecutive_failures, state",
            &[Value::from(id)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// Resets the run of failures of each contract with a success, and clears its zombie flag, in
/// one statement; a contract's last success (in log order) sets its time.
pub async fn record_successes(tx: &mut Tx, successes: Vec<(&str, i64)>) -> Result<(), StoreError> {
    if successes.is_empty() {
        return Ok(());
    }
    let last: std::collections::HashMap<&str, i64> = successes.into_iter().collect();
    let rows: Vec<serde_json::Value> = last.into_iter().map(|(id, at)| serde_json::json!([id, at])).collect();
    tx.execute(
        &format!(
            "UPDATE contracts_contracts SET consecutive_failures = 0, last_success_at_ms = v.at, zombie_flagged_at_ms = 0
             FROM (SELECT value->>0 AS id, CAST(value->>1 AS BIGINT) AS at FROM {}) v
             WHERE contracts_contracts.contract_id = v.id",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}
