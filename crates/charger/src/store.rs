//! The charger's tables, and every statement on them (`migrations/` holds their schema):
//!
//! - `charger_attempts`: attempts started and not yet ended, with when each is next due for the
//!   worker (a send, a query, or a lease that runs out);
//! - `charger_refunds`: refunds asked for and not yet ended, the same way;
//! - `charger_provider_contracts`: contracts WeChat Pay holds by an id of its own;
//! - `charger_callback_nonces`: the v3 callback nonces seen lately;
//! - `charger_api_keys`: the API keys (kept by `runtime::auth`).
//!
//! The timers in these tables (`due_ms`, `started_unix_ms`, `seen_at_ms`) run on the machine's
//! clock ([`unix_ms`]), not the platform's.
use autodebit_domain::charge::{Charge, ChargeEvent, ChargeState, ChargeStatus};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId};
use autodebit_eventstore::{BackendKind, EventStore, Migrations, StoreError, Tx, Value};
use autodebit_proto::events::v1 as pb;
use autodebit_provider::ChargeAttempt;
use autodebit_runtime::repository::{BatchHook, Done, Hook};
use std::collections::HashMap;

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("charger", 3000..4000);

/// Milliseconds since the epoch by the machine's clock. The attempts' timers (leases, the gaps
/// between questions) run on it rather than on the platform clock: they pace calls to a real
/// provider, and a test clock that stands still between jumps must not stall them.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `keys` as a JSON array of one-element arrays (`value->>0` reads each on both backends).
fn keys_json(keys: &[&str]) -> String {
    serde_json::Value::Array(keys.iter().map(|k| serde_json::json!([k])).collect()).to_string()
}

/// `FOR UPDATE … SKIP LOCKED` where the backend has it (PostgreSQL; SQLite has one writer).
fn skip_locked(kind: BackendKind, of: &str) -> String {
    if kind == BackendKind::Postgres { format!(" FOR UPDATE{of} SKIP LOCKED") } else { String::new() }
}

// ---------------------------------------------------------------------------------------------
// Attempts

/// An attempt as `charger_attempts` keeps it.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub out_trade_no: String,
    pub charge: Charge,
    pub provider: String,
    /// The charge stream's version once the attempt was started.
    pub stream_version: u64,
    /// Whether it may have reached the provider.
    pub sent: bool,
    pub checks: i64,
    /// When the attempt was started, by the machine's clock (not the platform's, which may be
    /// a test clock): what the settle-latency histogram measures from.
    pub started_unix_ms: i64,
    /// The contract's id at the provider; empty where none is known.
    pub provider_contract_id: String,
    /// The W3C trace context the attempt continues: its charge's scheduling (as written to
    /// the table), then, once it is sent, its own `charge_attempt` span's. Empty: none.
    pub trace: String,
}

/// A row of `charger_attempts`, with the contract's id at the provider where a signing notice
/// gave one, as the database has it.
#[derive(sqlx::FromRow)]
struct AttemptRecord {
    out_trade_no: String,
    charge_id: String,
    contract_id: String,
    merchant_id: String,
    payer_id: String,
    amount: i64,
    currency: String,
    attempt: i64,
    provider: String,
    stream_version: i64,
    sent: i64,
    checks: i64,
    started_unix_ms: i64,
    provider_contract_id: String,
    traceparent: String,
}

const ATTEMPT_COLUMNS: &str = "a.out_trade_no, a.charge_id, a.contract_id, a.merchant_id, a.payer_id, a.amount, \
                               a.currency, a.attempt, a.provider, a.stream_version, a.sent, a.checks, \
                               a.started_unix_ms, COALESCE(p.provider_contract_id, '') AS provider_contract_id, \
                               a.traceparent";
const ATTEMPT_FROM: &str = "charger_attempts a LEFT JOIN charger_provider_contracts p ON p.contract_id = a.contract_id";

impl AttemptRecord {
    /// The attempt, if its ids and amount read.
    fn parse(self) -> Option<AttemptRow> {
        let attempt = u32::try_from(self.attempt).ok()?;
        Some(AttemptRow {
            charge: Charge {
                charge_id: ChargeId::parse(&self.charge_id).ok()?,
                contract_id: ContractId::parse(&self.contract_id).ok()?,
                merchant_id: MerchantId::parse(&self.merchant_id).ok()?,
                payer_id: PayerId::parse(&self.payer_id).ok()?,
                amount: Money::new(self.amount, Currency::parse(&self.currency).ok()?),
                period: 0,
                due_at: from_millis(0),
                status: ChargeStatus::Scheduled,
                provider_transaction_id: None,
                code: None,
                message: None,
                attempt,
                retryable: false,
                started: attempt,
                out_trade_no: Some(self.out_trade_no.clone()),
                refunds: Vec::new(),
                hold: None,
            },
            out_trade_no: self.out_trade_no,
            provider: self.provider,
            stream_version: u64::try_from(self.stream_version).ok()?,
            sent: self.sent != 0,
            checks: self.checks,
            started_unix_ms: self.started_unix_ms,
            provider_contract_id: self.provider_contract_id,
            trace: self.traceparent,
        })
    }
}

/// The rows that read; those that do not are logged and left in place.
fn parse_attempts(found: Vec<AttemptRecord>) -> Vec<AttemptRow> {
    let n = found.len();
    let rows: Vec<AttemptRow> = found.into_iter().filter_map(AttemptRecord::parse).collect();
    if rows.len() < n {
        tracing::error!(unreadable = n - rows.len(), "unreadable charge attempts left in place");
    }
    rows
}

impl AttemptRow {
    /// The attempt a `StartAttempt` just recorded on its charge's stream.
    /// The attempt `done` started, continuing the trace `traces` holds for its charge.
    pub fn started(done: &Done<autodebit_domain::charge::Charge>, traces: &HashMap<ChargeId, String>) -> Option<Self> {
        let charge = done.state.clone()?;
        let trace = traces.get(&charge.charge_id).cloned().unwrap_or_default();
        let provider = done.events.iter().find_map(|e| match e {
            ChargeEvent::AttemptStarted { provider, .. } => Some(provider.clone()),
            _ => None,
        })?;
        Some(AttemptRow {
            out_trade_no: charge.out_trade_no.clone().unwrap_or_default(),
            charge,
            provider,
            stream_version: done.version,
            sent: false,
            checks: 0,
            started_unix_ms: unix_ms(),
            provider_contract_id: String::new(),
            trace,
        })
    }

    /// The charge as the attempt left it, and its stream's version then.
    pub fn loaded(&self) -> autodebit_runtime::repository::Loaded<ChargeState> {
        autodebit_runtime::repository::Loaded { state: Some(self.charge.clone()), version: self.stream_version }
    }

    /// The call the provider gets.
    pub fn attempt(&self) -> ChargeAttempt {
        let c = &self.charge;
        let mut a = ChargeAttempt::new(c.charge_id, c.contract_id, c.merchant_id.clone(), c.attempt, c.amount);
        a.out_trade_no = self.out_trade_no.clone();
        a.provider_contract_id = self.provider_contract_id.clone();
        a
    }
}

/// Writes down attempts just started (in the starting transaction). Most are not yet sent and
/// due now, for the worker to claim. The first `leased` are already the worker's: written as
/// possibly sent and leased until `lease_until`, exactly as a claim would leave them.
pub async fn insert_attempts(
    tx: &mut Tx,
    rows: &[AttemptRow],
    leased: usize,
    lease_until: i64,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = unix_ms();
    let json: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = &r.charge;
            let (sent, due) = if i < leased { (1, lease_until) } else { (0, now) };
            serde_json::json!([
                r.out_trade_no,
                c.charge_id.to_string(),
                c.contract_id.to_string(),
                c.merchant_id.as_str(),
                c.payer_id.as_str(),
                c.amount.minor_units(),
                c.amount.currency().as_str(),
                c.attempt,
                r.provider,
                r.stream_version,
                sent,
                due,
                r.trace,
            ])
        })
        .collect();
    let each = tx.kind().json_rows(1);
    tx.execute(
        &format!(
            "INSERT INTO charger_attempts (out_trade_no, charge_id, contract_id, merchant_id, payer_id, amount,
               currency, attempt, provider, stream_version, sent, due_ms, checks, started_unix_ms, traceparent)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, CAST(value->>5 AS BIGINT),
                    value->>6, CAST(value->>7 AS BIGINT), value->>8, CAST(value->>9 AS BIGINT),
                    CAST(value->>10 AS BIGINT), CAST(value->>11 AS BIGINT), 0, $2, value->>12
             FROM {each} WHERE true
             ON CONFLICT (out_trade_no) DO NOTHING"
        ),
        &[Value::from(serde_json::Value::Array(json).to_string()), Value::Int(now)],
    )
    .await?;
    Ok(())
}

/// The table hook of a batch of started attempts: a row for each, the first `leased` written
/// already claimed (leased until `lease_until`).
pub struct StartedAttempts {
    pub leased: usize,
    pub lease_until: i64,
    /// The trace each charge was scheduled under.
    pub traces: HashMap<ChargeId, String>,
}

impl BatchHook<Charge> for StartedAttempts {
    type Error = StoreError;

    async fn on_batch(&self, tx: &mut Tx, done: &[&Done<Charge>]) -> Result<(), StoreError> {
        let rows: Vec<AttemptRow> = done.iter().filter_map(|d| AttemptRow::started(d, &self.traces)).collect();
        insert_attempts(tx, &rows, self.leased, self.lease_until).await
    }
}

/// The table hook of a batch of attempts' outcomes: the rows of the attempts that `ended` go
/// (whoever recorded their outcome: a callback may have been first); those asked about
/// `later` count one more question and are next due at the given time.
pub struct SettledAttempts<'a> {
    pub ended: Vec<&'a str>,
    /// `(out_trade_no, next due_ms)`
    pub later: Vec<(&'a str, i64)>,
}

impl BatchHook<Charge> for SettledAttempts<'_> {
    type Error = StoreError;

    async fn on_batch(&self, tx: &mut Tx, _: &[&Done<Charge>]) -> Result<(), StoreError> {
        let each = tx.kind().json_rows(1);
        if !self.ended.is_empty() {
            tx.execute(
                &format!("DELETE FROM charger_attempts WHERE out_trade_no IN (SELECT value->>0 FROM {each})"),
                &[Value::from(keys_json(&self.ended))],
            )
            .await?;
        }
        if !self.later.is_empty() {
            let later: Vec<serde_json::Value> = self.later.iter().map(|(k, due)| serde_json::json!([k, due])).collect();
            tx.execute(
                &format!(
                    "UPDATE charger_attempts SET checks = checks + 1, due_ms = d.due
                     FROM (SELECT value->>0 AS k, CAST(value->>1 AS BIGINT) AS due FROM {each}) d
                     WHERE charger_attempts.out_trade_no = d.k"
                ),
                &[Value::from(serde_json::Value::Array(later).to_string())],
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct ProviderContract {
    contract_id: String,
    provider_contract_id: String,
}

/// The contracts' ids at their providers, where signing notices gave them (by contract id).
pub async fn provider_contract_ids(tx: &mut Tx, contracts: &[String]) -> Result<HashMap<String, String>, StoreError> {
    if contracts.is_empty() {
        return Ok(Default::default());
    }
    let keys: Vec<&str> = contracts.iter().map(String::as_str).collect();
    let each = tx.kind().json_rows(1);
    let rows: Vec<ProviderContract> = tx
        .query_as(
            &format!(
                "SELECT contract_id, provider_contract_id FROM charger_provider_contracts
                 WHERE contract_id IN (SELECT value->>0 FROM {each})"
            ),
            &[Value::from(keys_json(&keys))],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.contract_id, r.provider_contract_id)).collect())
}

/// Makes every attempt leased until later due at `now` (on SQLite, at start: the leases were
/// the last run's).
pub async fn release_leases(store: &EventStore, now: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.execute("UPDATE charger_attempts SET due_ms = $1 WHERE sent = 1 AND due_ms > $1", &[Value::Int(now)]).await?;
    tx.commit().await
}

#[derive(sqlx::FromRow)]
struct Due {
    due_ms: i64,
}

/// Whether any row of `table` is due at `now` (read without taking the writer).
async fn any_due(store: &EventStore, table: &str, now: i64) -> Result<bool, StoreError> {
    let found: Vec<Due> =
        store.query_as(&format!("SELECT due_ms FROM {table} WHERE due_ms <= $1 LIMIT 1"), &[Value::Int(now)]).await?;
    Ok(found.first().is_some_and(|d| d.due_ms <= now))
}

/// Whether any attempt is due at `now`.
pub async fn any_attempt_due(store: &EventStore, now: i64) -> Result<bool, StoreError> {
    any_due(store, "charger_attempts", now).await
}

/// Claims up to `limit` attempts due at `now`, earliest first: each is marked as possibly
/// sent and leased until `lease_until`, and that is committed before they are returned.
pub async fn claim_attempts(
    store: &EventStore,
    now: i64,
    limit: usize,
    lease_until: i64,
) -> Result<Vec<AttemptRow>, StoreError> {
    let mut tx = store.begin().await?;
    let lock = skip_locked(tx.kind(), " OF a");
    let found: Vec<AttemptRecord> = tx
        .query_as(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM {ATTEMPT_FROM} WHERE a.due_ms <= $1 ORDER BY a.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(now), Value::Int(limit as i64)],
        )
        .await?;
    let rows = parse_attempts(found);
    let keys: Vec<&str> = rows.iter().map(|r| r.out_trade_no.as_str()).collect();
    let each = tx.kind().json_rows(1);
    tx.execute(
        &format!(
            "UPDATE charger_attempts SET sent = 1, due_ms = $2
             WHERE out_trade_no IN (SELECT value->>0 FROM {each})"
        ),
        &[Value::from(keys_json(&keys)), Value::Int(lease_until)],
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The attempt `out_trade_no` names, if it is still waiting for its outcome.
pub async fn find_attempt(store: &EventStore, out_trade_no: &str) -> Result<Option<AttemptRow>, StoreError> {
    let found: Vec<AttemptRecord> = store
        .query_as(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM {ATTEMPT_FROM} WHERE a.out_trade_no = $1"),
            &[Value::from(out_trade_no)],
        )
        .await?;
    Ok(found.into_iter().next().and_then(AttemptRecord::parse))
}

// ---------------------------------------------------------------------------------------------
// Refunds

/// The table hook of a refund asked for: its work row, due at once.
pub struct RequestedRefunds;

impl Hook<Charge> for RequestedRefunds {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, state: &ChargeState, events: &[ChargeEvent]) -> Result<(), StoreError> {
        let Some(c) = state else { return Ok(()) };
        for e in events {
            if let ChargeEvent::RefundRequested { refund_id, .. } = e {
                tx.execute(
                    "INSERT INTO charger_refunds (refund_id, charge_id, merchant_id, due_ms, checks)
                     VALUES ($1, $2, $3, $4, 0)",
                    &[
                        Value::from(refund_id.as_str()),
                        Value::from(c.charge_id.to_string()),
                        Value::from(c.merchant_id.as_str()),
                        Value::Int(unix_ms()),
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The table hook of a refund's outcome: its work row goes.
pub struct EndedRefund<'a>(pub &'a str);

impl Hook<Charge> for EndedRefund<'_> {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, _: &ChargeState, _: &[ChargeEvent]) -> Result<(), StoreError> {
        drop_refund(tx, self.0).await
    }
}

/// Drops a refund's work row.
pub async fn drop_refund(tx: &mut Tx, refund_id: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM charger_refunds WHERE refund_id = $1", &[Value::from(refund_id)]).await?;
    Ok(())
}

/// Whether any refund is due at `now`.
pub async fn any_refund_due(store: &EventStore, now: i64) -> Result<bool, StoreError> {
    any_due(store, "charger_refunds", now).await
}

/// A row claimed by a worker: its key, and how often it was asked about already.
#[derive(sqlx::FromRow)]
pub struct Claimed {
    pub key: String,
    pub checks: i64,
}

/// Claims up to `limit` rows of `table` (keyed by `key`, with `due_ms` and `checks`) due at
/// `now`, earliest first, each leased until `lease_until`.
async fn claim(
    store: &EventStore,
    table: &str,
    key: &str,
    now: i64,
    limit: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let mut tx = store.begin().await?;
    let lock = skip_locked(tx.kind(), "");
    let claimed: Vec<Claimed> = tx
        .query_as(
            &format!("SELECT {key} AS key, checks FROM {table} WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2{lock}"),
            &[Value::Int(now), Value::Int(limit)],
        )
        .await?;
    let ids: Vec<&str> = claimed.iter().map(|r| r.key.as_str()).collect();
    let each = tx.kind().json_rows(1);
    tx.execute(
        &format!("UPDATE {table} SET due_ms = $2 WHERE {key} IN (SELECT value->>0 FROM {each})"),
        &[Value::from(keys_json(&ids)), Value::Int(lease_until)],
    )
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Puts a claimed row back, to be taken up at `due_ms`.
async fn ask_again(store: &EventStore, table: &str, key: &str, id: &str, due_ms: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.execute(
        &format!("UPDATE {table} SET due_ms = $2, checks = checks + 1 WHERE {key} = $1"),
        &[Value::from(id), Value::Int(due_ms)],
    )
    .await?;
    tx.commit().await
}

/// Claims up to `limit` refunds due at `now`, earliest first, each leased until `lease_until`.
pub async fn claim_refunds(
    store: &EventStore,
    now: i64,
    limit: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>, StoreError> {
    claim(store, "charger_refunds", "refund_id", now, limit, lease_until).await
}

/// A refund claimed and left undecided is asked about again at `due_ms`.
pub async fn ask_refund_again(store: &EventStore, refund_id: &str, due_ms: i64) -> Result<(), StoreError> {
    ask_again(store, "charger_refunds", "refund_id", refund_id, due_ms).await
}

/// Whether any profit-sharing order is due at `now`.
pub async fn any_share_due(store: &EventStore, now: i64) -> Result<bool, StoreError> {
    any_due(store, "charger_shares", now).await
}

/// Claims up to `limit` profit-sharing orders due at `now`, each leased until `lease_until`.
pub async fn claim_shares(
    store: &EventStore,
    now: i64,
    limit: i64,
    lease_until: i64,
) -> Result<Vec<Claimed>, StoreError> {
    claim(store, "charger_shares", "out_order_no", now, limit, lease_until).await
}

/// A profit-sharing order left undecided is sent again at `due_ms`.
pub async fn ask_share_again(store: &EventStore, out_order_no: &str, due_ms: i64) -> Result<(), StoreError> {
    ask_again(store, "charger_shares", "out_order_no", out_order_no, due_ms).await
}

// ---------------------------------------------------------------------------------------------
// Contracts at the provider

#[derive(sqlx::FromRow)]
struct SignedContract {
    merchant_id: String,
    provider_contract_id: String,
}

/// The merchant and provider contract id of a contract signed at the provider.
pub async fn signed_at_provider(store: &EventStore, contract_id: &str) -> Result<Option<(String, String)>, StoreError> {
    let rows: Vec<SignedContract> = store
        .query_as(
            "SELECT merchant_id, provider_contract_id FROM charger_provider_contracts
             WHERE contract_id = $1 AND state = 'signed'",
            &[Value::from(contract_id)],
        )
        .await?;
    Ok(rows.into_iter().next().map(|r| (r.merchant_id, r.provider_contract_id)))
}

/// Keeps what a provider's notice said of a contract: its id there, and its state.
pub async fn save_provider_contract(tx: &mut Tx, c: &pb::ProviderContractChanged) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO charger_provider_contracts
           (contract_id, merchant_id, provider_contract_id, state, changed_at_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (contract_id) DO UPDATE SET provider_contract_id = excluded.provider_contract_id,
           state = excluded.state, changed_at_ms = excluded.changed_at_ms",
        &[
            Value::from(&c.contract_id),
            Value::from(&c.merchant_id),
            Value::from(&c.provider_contract_id),
            Value::from(&c.state),
            Value::Int(c.changed_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Marks a contract deleted at its provider.
pub async fn provider_contract_deleted(tx: &mut Tx, contract_id: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE charger_provider_contracts SET state = 'deleted' WHERE contract_id = $1",
        &[Value::from(contract_id)],
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Callback nonces

/// Takes `nonce` as used at `now`, forgetting those seen before `forget_before`; `false` if it
/// was used before (nothing is kept then).
pub async fn remember_nonce(store: &EventStore, nonce: &str, now: i64, forget_before: i64) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    tx.execute("DELETE FROM charger_callback_nonces WHERE seen_at_ms < $1", &[Value::Int(forget_before)]).await?;
    let fresh = tx
        .execute(
            "INSERT INTO charger_callback_nonces (nonce, seen_at_ms) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
            &[Value::from(nonce), Value::Int(now)],
        )
        .await?;
    if fresh == 0 {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}
