//! `contracts_signing_sessions`: what the sign-time risk checks ask, each session's SMS code
//! (its hash, and with the simulator provider the code to show), and whether it has ended.
use autodebit_eventstore::{EventStore, StoreError, Tx, Value};

/// A session as the table keeps it.
pub struct NewSession<'a> {
    pub session_id: &'a str,
    pub merchant_id: &'a str,
    pub payer_id: &'a str,
    pub device_id: &'a str,
    pub client_region: &'a str,
    pub opened_at_ms: i64,
    /// SHA-256 of the SMS code sent ("": none was).
    pub sms_code_sha256: &'a str,
    /// The SMS code to show on the page ("": none).
    pub sms_code_hint: &'a str,
}

pub async fn insert(tx: &mut Tx, s: &NewSession<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO contracts_signing_sessions
           (session_id, merchant_id, payer_id, device_id, client_region, opened_at_ms, sms_code_sha256, sms_code_hint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            Value::from(s.session_id),
            Value::from(s.merchant_id),
            Value::from(s.payer_id),
            Value::from(s.device_id),
            Value::from(s.client_region),
            Value::Int(s.opened_at_ms),
            Value::from(s.sms_code_sha256),
            Value::from(s.sms_code_hint),
        ],
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AccountsRow {
    accounts: i64,
}

#[derive(sqlx::FromRow)]
struct RegionRow {
    client_region: String,
}

#[derive(sqlx::FromRow)]
struct SmsRow {
    sms_code_sha256: String,
    sms_code_hint: String,
}

#[derive(sqlx::FromRow)]
struct SessionIdRow {
    session_id: String,
}

/// Distinct payer accounts other than `payer` that `device` opened sessions for after
/// `since_ms`.
pub async fn other_accounts_on_device(
    tx: &mut Tx,
    device: &str,
    payer: &str,
    since_ms: i64,
) -> Result<i64, StoreError> {
    let rows: Vec<AccountsRow> = tx
        .query_as(
            "SELECT COUNT(DISTINCT payer_id) AS accounts FROM contracts_signing_sessions
             WHERE device_id = $1 AND payer_id <> $2 AND opened_at_ms > $3",
            &[Value::from(device), Value::from(payer), Value::Int(since_ms)],
        )
        .await?;
    Ok(rows.first().map(|r| r.accounts).unwrap_or(0))
}

/// The region of the payer's first session with the merchant whose region was known.
pub async fn usual_region(tx: &mut Tx, payer: &str, merchant: &str) -> Result<Option<String>, StoreError> {
    let rows: Vec<RegionRow> = tx
        .query_as(
            "SELECT client_region FROM contracts_signing_sessions
             WHERE payer_id = $1 AND merchant_id = $2 AND client_region <> '' ORDER BY opened_at_ms LIMIT 1",
            &[Value::from(payer), Value::from(merchant)],
        )
        .await?;
    Ok(rows.into_iter().next().map(|r| r.client_region))
}

async fn sms(store: &EventStore, session_id: &str) -> Result<Option<SmsRow>, StoreError> {
    let rows: Vec<SmsRow> = store
        .query_as(
            "SELECT sms_code_sha256, sms_code_hint FROM contracts_signing_sessions WHERE session_id = $1",
            &[Value::from(session_id)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// The SHA-256 of the SMS code sent for the session ("": none was).
pub async fn sms_code_sha256(store: &EventStore, session_id: &str) -> Result<String, StoreError> {
    Ok(sms(store, session_id).await?.map(|r| r.sms_code_sha256).unwrap_or_default())
}

/// The SMS code to show on the session's page ("": none).
pub async fn sms_code_hint(store: &EventStore, session_id: &str) -> Result<String, StoreError> {
    Ok(sms(store, session_id).await?.map(|r| r.sms_code_hint).unwrap_or_default())
}

/// Sessions not yet ended that opened at `cutoff_ms` or earlier; at most `limit`.
pub async fn open_since(store: &EventStore, cutoff_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
    let rows: Vec<SessionIdRow> = store
        .query_as(
            "SELECT session_id FROM contracts_signing_sessions WHERE ended = 0 AND opened_at_ms <= $1 LIMIT $2",
            &[Value::Int(cutoff_ms), Value::Int(limit)],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.session_id).collect())
}

/// Marks a session ended, in a transaction of its own.
pub async fn mark_ended(store: &EventStore, session_id: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.execute("UPDATE contracts_signing_sessions SET ended = 1 WHERE session_id = $1", &[Value::from(session_id)])
        .await?;
    tx.commit().await
}
