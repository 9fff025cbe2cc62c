//! Attempts in flight, and the worker that takes each to its one outcome.
//!
//! An attempt is written down before it may reach the provider: the charge stream gets
//! `ChargeAttemptStarted` and `charger_attempts` a row, in one transaction (the follower in
//! `processor`). The worker then claims due rows, marking each as possibly sent and leasing it
//! for `LEASE`, and commits that before any call. (While the worker has free slots, the
//! follower writes the rows it starts already claimed that way, and hands them over in memory
//! once committed, which spares a claim transaction and its wait for the writer.) So a row
//! found again — after a crash, or a lease that ran out — may have reached the provider, and it
//! is settled by asking the provider (`query`), never by sending it again; only a provider that
//! says it never saw the order number gets it sent. An ambiguous answer (a timeout,
//! `SYSTEMERROR`, still paying) is asked about again with growing gaps (`worker::gap`). The
//! outcome is appended to the charge stream at the version the attempt left it, and the row
//! deleted, in one transaction (`app::record_outcomes`); a callback from the provider that got
//! there first has already done both, and the second is a no-op.
use super::next_question_ms;
use crate::Providers;
use crate::app::{self, Resolution};
use crate::store::{self, AttemptRow};
use autodebit_eventstore::BackendKind;
use autodebit_provider::{Lookup, ProviderOutcome};
use autodebit_runtime::Platform;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

/// How long a claimed attempt is left to its claimer before another may take it up (by query).
/// Longer than any provider call may take.
pub const LEASE: Duration = Duration::from_secs(30);
/// Rows claimed per transaction at most; outcomes recorded per transaction at most.
const CLAIM: usize = 2_000;
/// How often the worker looks when nothing wakes it.
const TICK: Duration = Duration::from_millis(200);

/// When a lease taken now runs out, by the machine's clock.
pub fn lease_until() -> i64 {
    store::unix_ms() + LEASE.as_millis() as i64
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
    /// The call runs in a `charge_attempt` span continuing the trace the charge was scheduled
    /// under; the outcome recorded continues that span.
    pub fn send(&self, mut row: AttemptRow, permit: OwnedSemaphorePermit) {
        let (providers, resolutions) = (self.providers.clone(), self.resolutions.clone());
        let span = tracing::info_span!("charge_attempt", out_trade_no = row.out_trade_no, sent = row.sent);
        if !row.trace.is_empty() {
            autodebit_runtime::telemetry::set_parent_from_traceparent(&span, &row.trace);
        }
        if let Some(own) = span.in_scope(autodebit_runtime::telemetry::current_traceparent) {
            row.trace = own;
        }
        tokio::spawn(async move {
            let resolution = resolve(&providers, row).instrument(span).await;
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
    store::release_leases(&platform.store, store::unix_ms()).await?;
    Ok(())
}

/// Claims due attempts, as many as the worker has free slots (up to `CLAIM`), each with its
/// slot: each is marked as possibly sent and leased, and that is committed before any of them
/// is sent. Slots are taken first, so a claimed row never waits for one while its lease runs.
async fn claim(platform: &Platform, worker: &Dispatch) -> anyhow::Result<Vec<(AttemptRow, OwnedSemaphorePermit)>> {
    let now = store::unix_ms();
    if !store::any_attempt_due(&platform.store, now).await? {
        return Ok(Vec::new());
    }
    let slots = worker.reserve(CLAIM);
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    let rows = store::claim_attempts(&platform.store, now, slots.len(), now + LEASE.as_millis() as i64).await?;
    // Fewer rows than slots: the rest go back.
    Ok(rows.into_iter().zip(slots).collect())
}

/// Sends a fresh attempt, or asks about one that may have been sent.
pub async fn resolve(providers: &Providers, row: AttemptRow) -> Resolution {
    let provider = providers.for_merchant(row.charge.merchant_id.as_str());
    let attempt = row.attempt();
    if row.sent {
        match provider.query(&attempt).await {
            Lookup::Ended(outcome) => return Resolution::Ended(row, outcome),
            Lookup::Pending { reason } => return later(row, reason),
            // Never received: sending it now cannot debit twice.
            Lookup::NotFound => {}
        }
    }
    match provider.charge(&attempt).await {
        ProviderOutcome::Unknown { reason } => later(row, reason),
        outcome => Resolution::Ended(row, outcome),
    }
}

/// Not known yet: asked about again after the next gap.
fn later(row: AttemptRow, reason: String) -> Resolution {
    let due = next_question_ms(row.checks);
    Resolution::Later(row, reason, due)
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
        while let Err(e) = app::record_outcomes(&platform, &batch).await {
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
