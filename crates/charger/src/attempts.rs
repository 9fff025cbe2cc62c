//! Attempts in flight, and the worker that takes each to its one outcome.
//!
//! An attempt is written down before it may reach the provider: the charge stream gets
//! `ChargeAttemptStarted` and `charger_attempts` a row, in one transaction (the follower in
//! `processor`). The worker then claims due rows, marking each as possibly sent and leasing it
//! for `LEASE`, and commits that before any call. (While the worker has free slots, the
//! follower writes the rows it starts already claimed that way, and hands them over in memory
//! once committed, which spares a claim transaction and its wait for the writer.) So a row
//! found again — after a crash, or a lease that ran out — may have reached the provider, and it is settled by asking the
//! provider (`query`), never by sending it again; only a provider that says it never saw the
//! order number gets it sent. An ambiguous answer (a timeout, `SYSTEMERROR`, still paying) is
//! asked about again with growing gaps. The outcome is appended to the charge stream at the
//! version the attempt left it, and the row deleted, in one transaction; a callback from the
//! provider that got there first has already done both, and the second is a no-op. Leases and
//! gaps are machine time (`unix_ms`), not the platform clock.
use crate::Providers;
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeStatus};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId};
use autodebit_eventstore::{BackendKind, ExpectedVersion, Migrations, StreamAppend, Tx, Value};
use autodebit_provider::{ChargeAttempt, Lookup, ProviderOutcome};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("charger", 3000..4000);

/// The histogram of the time from an attempt's start to its recorded outcome (milliseconds).
pub const SETTLE_LATENCY: &str = autodebit_runtime::metrics::CHARGE_SETTLE_MS;
/// How long a claimed attempt is left to its claimer before another may take it up (by query).
/// Longer than any provider call may take.
pub const LEASE: Duration = Duration::from_secs(30);
/// Rows claimed per transaction at most.
const CLAIM: usize = 2_000;
/// How often the worker looks when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);
/// The longest gap between two queries of an ambiguous attempt.
const MAX_GAP: Duration = Duration::from_secs(300);

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
}

/// Read with the contract's id at the provider, where a signing notice gave one.
const COLUMNS: &str = "a.out_trade_no, a.charge_id, a.contract_id, a.merchant_id, a.payer_id, a.amount, a.currency, \
                       a.attempt, a.provider, a.stream_version, a.sent, a.checks, a.started_unix_ms, \
                       COALESCE(p.provider_contract_id, '')";
const FROM: &str = "charger_attempts a LEFT JOIN charger_provider_contracts p ON p.contract_id = a.contract_id";

impl AttemptRow {
    pub fn from_row(r: &autodebit_eventstore::Row) -> Option<Self> {
        let attempt = u32::try_from(r.i64(7)?).ok()?;
        Some(AttemptRow {
            out_trade_no: r.text(0)?.to_string(),
            charge: Charge {
                charge_id: ChargeId::parse(r.text(1)?).ok()?,
                contract_id: ContractId::parse(r.text(2)?).ok()?,
                merchant_id: MerchantId::parse(r.text(3)?).ok()?,
                payer_id: PayerId::parse(r.text(4)?).ok()?,
                amount: Money::new(r.i64(5)?, Currency::parse(r.text(6)?).ok()?),
                period: 0,
                due_at: from_millis(0),
                status: ChargeStatus::Scheduled,
                provider_transaction_id: None,
                code: None,
                message: None,
                attempt,
                retryable: false,
                started: attempt,
                out_trade_no: Some(r.text(0)?.to_string()),
                refunds: Vec::new(),
            },
            provider: r.text(8)?.to_string(),
            stream_version: u64::try_from(r.i64(9)?).ok()?,
            sent: r.i64(10)? != 0,
            checks: r.i64(11)?,
            started_unix_ms: r.i64(12)?,
            provider_contract_id: r.text(13).unwrap_or_default().to_string(),
        })
    }

    fn attempt(&self) -> ChargeAttempt {
        let c = &self.charge;
        let mut a = ChargeAttempt::new(c.charge_id, c.contract_id, c.merchant_id.clone(), c.attempt, c.amount);
        a.out_trade_no = self.out_trade_no.clone();
        a.provider_contract_id = self.provider_contract_id.clone();
        a
    }
}

/// Writes down attempts just started (in the follower's transaction). Most are not yet sent
/// and due now, for the worker to claim. Those in `leased` (the first `leased` rows) are
/// already the worker's: written as possibly sent and leased for `LEASE`, exactly as a claim
/// would leave them, and handed to it in memory once the transaction commits.
pub async fn insert(tx: &mut Tx, rows: &[AttemptRow], leased: usize) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = unix_ms();
    let json: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = &r.charge;
            let (sent, due) = if i < leased { (1, now + LEASE.as_millis() as i64) } else { (0, now) };
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
            ])
        })
        .collect();
    let each = tx.kind().json_rows(1);
    let cols: Vec<String> = (0..12)
        .map(|i| {
            if matches!(i, 5 | 7 | 9 | 10 | 11) {
                format!("CAST(value->>{i} AS BIGINT)")
            } else {
                format!("value->>{i}")
            }
        })
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO charger_attempts (out_trade_no, charge_id, contract_id, merchant_id, payer_id, amount,
               currency, attempt, provider, stream_version, sent, due_ms, checks, started_unix_ms)
             SELECT {}, 0, $2 FROM {each} WHERE true
             ON CONFLICT (out_trade_no) DO NOTHING",
            cols.join(", ")
        ),
        &[Value::from(serde_json::Value::Array(json).to_string()), Value::Int(now)],
    )
    .await?;
    Ok(())
}

/// The contracts' ids at their providers, where signing notices gave them (by contract id).
pub async fn provider_contract_ids(
    tx: &mut Tx,
    contracts: &[String],
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    if contracts.is_empty() {
        return Ok(Default::default());
    }
    let keys: Vec<&str> = contracts.iter().map(String::as_str).collect();
    let each = tx.kind().json_rows(1);
    let rows = tx
        .query(
            &format!(
                "SELECT contract_id, provider_contract_id FROM charger_provider_contracts
                 WHERE contract_id IN (SELECT value->>0 FROM {each})"
            ),
            &[Value::from(keys_json(&keys))],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| Some((r.text(0)?.to_string(), r.text(1)?.to_string()))).collect())
}

/// Milliseconds since the epoch by the machine's clock. The attempts' timers (leases, the gaps
/// between questions) run on it rather than on the platform clock: they pace calls to a real
/// provider, and a test clock that stands still between jumps must not stall them.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What became of a claimed attempt.
#[derive(Debug)]
pub enum Resolution {
    /// It ended at the provider.
    Ended(AttemptRow, ProviderOutcome),
    /// Not known yet: ask again later.
    Later(AttemptRow, String),
}

/// The worker's provider calls: its slots (the concurrency limit) and where their answers go.
#[derive(Clone)]
pub struct Dispatch {
    slots: Arc<Semaphore>,
    resolutions: mpsc::Sender<Resolution>,
    providers: Arc<Providers>,
}

impl Dispatch {
    /// Up to `n` free slots, taken now (none waited for).
    pub fn reserve(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        std::iter::from_fn(|| self.slots.clone().try_acquire_owned().ok()).take(n).collect()
    }

    /// Takes `row`, claimed and committed, to its outcome in the slot `permit` holds.
    pub fn send(&self, row: AttemptRow, permit: OwnedSemaphorePermit) {
        let (providers, resolutions) = (self.providers.clone(), self.resolutions.clone());
        tokio::spawn(async move {
            let resolution = resolve(&providers, row).await;
            drop(permit);
            let _ = resolutions.send(resolution).await;
        });
    }
}

/// Starts the worker and the recorder of what it learns.
pub fn spawn(platform: Platform, providers: Arc<Providers>, concurrency: usize) -> Dispatch {
    let (tx, rx) = mpsc::channel::<Resolution>(concurrency.max(1) * 2);
    tokio::spawn(record_loop(platform.clone(), rx));
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let dispatch = Dispatch { slots: slots.clone(), resolutions: tx, providers };
    let worker = dispatch.clone();
    tokio::spawn(async move {
        let mut commits = platform.store.watch_commits();
        loop {
            let claimed = match claim(&platform, &worker).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "claiming charge attempts failed; retrying");
                    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
                    Vec::new()
                }
            };
            let busy = !claimed.is_empty();
            for (row, slot) in claimed {
                worker.send(row, slot);
            }
            if busy && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
    dispatch
}

/// On SQLite one process owns the database, so leases left by its last run (a crash) are
/// over: those attempts are asked about at once instead of when the lease would run out.
/// Runs before the follower starts attempts: a row it writes already claimed is this run's,
/// on its way to the worker in memory, and must keep its lease.
pub async fn release_own_leases(platform: &Platform) -> anyhow::Result<()> {
    if platform.store.kind() != BackendKind::Sqlite {
        return Ok(());
    }
    let now = unix_ms();
    let mut tx = platform.store.begin().await?;
    tx.execute("UPDATE charger_attempts SET due_ms = $1 WHERE sent = 1 AND due_ms > $1", &[Value::Int(now)]).await?;
    tx.commit().await?;
    Ok(())
}

/// Claims due attempts, as many as the worker has free slots (up to `CLAIM`), each with its
/// slot: each is marked as possibly sent and leased, and that is committed before any of them
/// is sent. Slots are taken first, so a claimed row never waits for one while its lease runs.
async fn claim(platform: &Platform, worker: &Dispatch) -> anyhow::Result<Vec<(AttemptRow, OwnedSemaphorePermit)>> {
    let now = unix_ms();
    let any =
        platform.store.query("SELECT 1 FROM charger_attempts WHERE due_ms <= $1 LIMIT 1", &[Value::Int(now)]).await?;
    if any.is_empty() {
        return Ok(Vec::new());
    }
    let slots = worker.reserve(CLAIM);
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    let limit = slots.len();
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF a SKIP LOCKED" } else { "" };
    let found = tx
        .query(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE a.due_ms <= $1 ORDER BY a.due_ms LIMIT $2{lock}"),
            &[Value::Int(now), Value::Int(limit as i64)],
        )
        .await?;
    let rows: Vec<AttemptRow> = found.iter().filter_map(AttemptRow::from_row).collect();
    if rows.len() < found.len() {
        tracing::error!(unreadable = found.len() - rows.len(), "unreadable charge attempts left in place");
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.out_trade_no.as_str()).collect();
    let each = tx.kind().json_rows(1);
    tx.execute(
        &format!(
            "UPDATE charger_attempts SET sent = 1, due_ms = $2
             WHERE out_trade_no IN (SELECT value->>0 FROM {each})"
        ),
        &[Value::from(keys_json(&keys)), Value::Int(now + LEASE.as_millis() as i64)],
    )
    .await?;
    tx.commit().await?;
    // Fewer rows than slots: the rest go back.
    Ok(rows.into_iter().zip(slots).collect())
}

/// `keys` as a JSON array of one-element arrays (`value->>0` reads each on both backends).
pub(crate) fn keys_json(keys: &[&str]) -> String {
    serde_json::Value::Array(keys.iter().map(|k| serde_json::json!([k])).collect()).to_string()
}

/// Sends a fresh attempt, or asks about one that may have been sent.
pub async fn resolve(providers: &Providers, row: AttemptRow) -> Resolution {
    let provider = providers.for_merchant(row.charge.merchant_id.as_str());
    let attempt = row.attempt();
    if row.sent {
        match provider.query(&attempt).await {
            Lookup::Ended(outcome) => return Resolution::Ended(row, outcome),
            Lookup::Pending { reason } => return Resolution::Later(row, reason),
            // Never received: sending it now cannot debit twice.
            Lookup::NotFound => {}
        }
    }
    match provider.charge(&attempt).await {
        ProviderOutcome::Unknown { reason } => Resolution::Later(row, reason),
        outcome => Resolution::Ended(row, outcome),
    }
}

/// A batch of outcomes that failed to record is tried again after 200 ms, then twice as long
/// each time, up to 5 s, for as long as it fails.
const RECORD_BACKOFF: backon::ExponentialBuilder = backon::ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(Duration::from_secs(5))
    .without_max_times();

/// Records resolutions in batches as they come.
async fn record_loop(platform: Platform, mut rx: mpsc::Receiver<Resolution>) {
    let mut batch = Vec::with_capacity(CLAIM);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, CLAIM).await == 0 {
            return;
        }
        let mut failures = 0;
        let mut backoff = backon::BackoffBuilder::build(RECORD_BACKOFF);
        while let Err(e) = record(&platform, &batch).await {
            // Nothing was committed; the provider's answers are kept in memory and tried again
            // (and, if this process dies, the rows' leases run out and the attempts are queried).
            failures += 1;
            tracing::error!(error = format!("{e:#}"), failures, "recording charge outcomes failed; retrying");
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
            if platform.shutdown.is_triggered() {
                return;
            }
        }
    }
}

/// Appends each ended attempt's outcome and drops its row; moves each undecided one's next
/// question on. One transaction.
pub async fn record(platform: &Platform, batch: &[Resolution]) -> anyhow::Result<()> {
    let now = platform.clock.now();
    let mut appends = Vec::new();
    let mut ended = Vec::new();
    let mut later = Vec::new();
    for r in batch {
        match r {
            Resolution::Ended(row, outcome) => {
                if let Some(append) = outcome_append(row, outcome, now) {
                    appends.push(append);
                }
                ended.push(row.out_trade_no.as_str());
            }
            Resolution::Later(row, reason) => {
                // Every WeChat Pay deduction passes here once (accepted, result to come).
                tracing::debug!(out_trade_no = row.out_trade_no, reason, "attempt outcome not known yet; will ask");
                later.push(serde_json::json!([row.out_trade_no, unix_ms() + gap(row.checks).as_millis() as i64]));
            }
        }
    }
    let mut tx = platform.store.begin().await?;
    let (mut succeeded, mut failed) = (0i64, 0i64);
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        match outcome {
            Ok(_) if append.events.iter().any(|e| e.event_type == "ChargeSucceeded") => succeeded += 1,
            Ok(_) => failed += 1,
            // A callback or another worker recorded it first.
            Err(e) => tracing::debug!(stream = append.stream, error = %e, "outcome already recorded"),
        }
    }
    let each = tx.kind().json_rows(1);
    if !ended.is_empty() {
        tx.execute(
            &format!("DELETE FROM charger_attempts WHERE out_trade_no IN (SELECT value->>0 FROM {each})"),
            &[Value::from(keys_json(&ended))],
        )
        .await?;
    }
    if !later.is_empty() {
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
    tx.commit().await?;
    let done = unix_ms();
    for r in batch {
        if let Resolution::Ended(row, _) = r {
            autodebit_runtime::metrics::observe_ms(SETTLE_LATENCY, done - row.started_unix_ms);
        }
    }
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SUCCEEDED, &[], succeeded);
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_FAILED, &[], failed);
    Ok(())
}

/// The wait before asking about an undecided attempt again: 1 s, doubling, at most 5 minutes.
pub fn gap(checks: i64) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1u32 << checks.clamp(0, 16));
    doubled.min(MAX_GAP)
}

/// The event that records `outcome` on the charge stream, where the attempt left it.
fn outcome_append(
    row: &AttemptRow,
    outcome: &ProviderOutcome,
    now: autodebit_domain::Timestamp,
) -> Option<StreamAppend> {
    let command = match outcome {
        ProviderOutcome::Succeeded { transaction_id } => {
            ChargeCommand::RecordSuccess { provider_transaction_id: transaction_id.clone() }
        }
        ProviderOutcome::Declined { code, message, retryable } => ChargeCommand::RecordFailure {
            provider_code: code.clone(),
            message: message.clone(),
            retryable: *retryable,
        },
        ProviderOutcome::Unknown { .. } => return None,
    };
    let state = Some(row.charge.clone());
    let events = charge::decide(&state, command, now).ok()?;
    let cause = Cause::request(format!("{}/attempt/{}", row.charge.charge_id, row.charge.attempt));
    let encoded = events
        .iter()
        .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
        .map(|e| codec::encode(e, &cause, now.timestamp_millis()))
        .collect();
    Some(StreamAppend {
        stream: row.charge.charge_id.stream(),
        expected: ExpectedVersion::Exact(row.stream_version),
        events: encoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_space_out_to_five_minutes() {
        assert_eq!(gap(0), Duration::from_secs(1));
        assert_eq!(gap(3), Duration::from_secs(8));
        assert_eq!(gap(40), MAX_GAP);
    }
}

/// The attempt `out_trade_no` names, if it is still waiting for its outcome.
pub async fn find(store: &autodebit_eventstore::EventStore, out_trade_no: &str) -> anyhow::Result<Option<AttemptRow>> {
    let found = store
        .query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE a.out_trade_no = $1"), &[Value::from(out_trade_no)])
        .await?;
    Ok(found.first().and_then(AttemptRow::from_row))
}
