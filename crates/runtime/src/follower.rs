//! Log followers: read the global log from a stored checkpoint, act on the events a follower
//! wants, and write the checkpoint in the same transaction as the effects, so each event takes
//! effect exactly once. One holder of a follower's lease runs at a time across processes.
use crate::Platform;
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::Metadata;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// How many events a follower takes per transaction.
const BATCH: i64 = 1000;
/// How many events of the log a follower of some types scans for them per read.
const WINDOW: i64 = 8 * BATCH;
/// A follower that saw only events it ignores saves its place at most this often.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// An event from the log, decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub stream: String,
    pub version: u64,
    pub kind: EventKind,
    pub meta: Metadata,
}

/// One follower of the log.
pub trait Processor: Send + Sync + 'static {
    /// Work done before the transaction opens (e.g. calling a provider), so that slow I/O
    /// never holds the database's write lock.
    type Prepared: Send;

    /// The consumer name its checkpoint and lease are kept under.
    fn name(&self) -> &'static str;

    /// The event types (as stored in the log) it reads; an empty list reads every event.
    /// Events of other types are passed over inside the database.
    fn event_types(&self) -> &'static [&'static str];

    /// Called once the transaction of a batch `apply` wrote has committed.
    fn committed(&self) {}

    /// Called when a batch failed after `prepare` (nothing of it was kept, as far as the
    /// follower knows): to let go of what `prepare` or `apply` held for it.
    fn abandoned(&self) {}

    /// Whether it is background work (a projection that may run behind), whose transactions
    /// let the platform's foreground ones go first.
    fn background(&self) -> bool {
        false
    }

    /// How many events it takes per transaction at most.
    fn batch(&self) -> i64 {
        BATCH
    }

    /// Whether it acts on this event, of one of its types; others pass by.
    fn wants(&self, _kind: &EventKind) -> bool {
        true
    }

    fn prepare(&self, events: &[Decoded]) -> impl Future<Output = anyhow::Result<Self::Prepared>> + Send;

    fn apply(
        &self,
        tx: &mut Tx,
        events: &[Decoded],
        prepared: Self::Prepared,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The longest a failed follower waits before it tries again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A failed follower tries again after 100 ms, then twice as long each time, up to
/// [`MAX_BACKOFF`], for as long as it fails.
const FOLLOWER_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(MAX_BACKOFF)
    .without_max_times();

/// Runs `processor` until shutdown.
pub fn spawn_follower<P: Processor>(platform: &Platform, processor: P) -> tokio::task::JoinHandle<()> {
    spawn_follower_into(platform, platform.store.clone(), processor)
}

/// Runs `processor` until shutdown, reading the log of `platform` and writing its tables and
/// checkpoint into `sink` (another database, whose writer the log's writers never wait for).
pub fn spawn_follower_into<P: Processor>(
    platform: &Platform,
    sink: autodebit_eventstore::EventStore,
    processor: P,
) -> tokio::task::JoinHandle<()> {
    let platform = platform.clone();
    tokio::spawn(async move {
        let name = processor.name();
        let lease_name = format!("follower:{name}");
        let lease = tokio::select! {
            l = sink.acquire_lease(&lease_name) => l,
            _ = platform.shutdown.wait() => return,
        };
        let _lease = match lease {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(follower = name, error = %e, "cannot take the follower's lease");
                return;
            }
        };
        let mut backoff = FOLLOWER_BACKOFF.build();
        loop {
            let started = tokio::time::Instant::now();
            match follow(&platform, &sink, &processor).await {
                Ok(()) => return,
                // Stopped in the middle of a transaction by the shutdown: nothing failed.
                Err(_) if platform.shutdown.is_triggered() => return,
                Err(e) => {
                    // A follower that ran a while before failing starts its back-off afresh.
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = FOLLOWER_BACKOFF.build();
                    }
                    crate::metrics::add(crate::metrics::FOLLOWER_ERRORS, &[("follower", name)], 1);
                    tracing::error!(follower = name, error = format!("{e:#}"), "follower failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)) => {}
                        _ = platform.shutdown.wait() => return,
                    }
                }
            }
        }
    })
}

/// Runs `processor` like [`spawn_follower_into`], on a thread of its own with a runtime of its
/// own when `sink` is a SQLite database (one whose connections are threads, not sockets bound
/// to a runtime): a follower that must keep close behind the log (the projections) is then
/// scheduled by the operating system beside the platform's runtime, rather than queued behind
/// the thousands of tasks a burst of charges keeps on it. Elsewhere it runs on the platform's
/// runtime.
pub fn spawn_follower_apart<P: Processor>(platform: &Platform, sink: autodebit_eventstore::EventStore, processor: P) {
    if sink.kind() != autodebit_eventstore::BackendKind::Sqlite {
        spawn_follower_into(platform, sink, processor);
        return;
    }
    let platform = platform.clone();
    let name = processor.name();
    let spawned = std::thread::Builder::new().name(format!("follow {name}")).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(async move {
                let _ = spawn_follower_into(&platform, sink, processor).await;
            }),
            Err(e) => tracing::error!(follower = name, error = %e, "cannot start the follower's runtime"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(follower = name, error = %e, "cannot start the follower's thread");
    }
}

async fn follow<P: Processor>(
    platform: &Platform,
    sink: &autodebit_eventstore::EventStore,
    p: &P,
) -> anyhow::Result<()> {
    let store = &platform.store;
    let name = p.name();
    let mut saved = sink.load_checkpoint(name).await?;
    let mut at = saved;
    let mut last_save = tokio::time::Instant::now();
    let mut wake = store.watch_commits();
    loop {
        if platform.shutdown.is_triggered() {
            return Ok(());
        }
        let batch = p.batch();
        let read_at = std::time::Instant::now();
        let scan = store.read_types(at, WINDOW.max(batch), batch, p.event_types()).await?;
        let last = scan.through;
        if scan.events.is_empty() {
            crate::metrics::set(crate::metrics::FOLLOWER_LAG_MS, &[("follower", name)], 0);
            if last != at {
                // Only events of other types: move on without a transaction.
                at = last;
                crate::metrics::set(crate::metrics::FOLLOWER_POSITION, &[("follower", name)], at.position);
                continue;
            }
            if at != saved && last_save.elapsed() >= IDLE_CHECKPOINT_EVERY {
                let mut tx = sink.begin().await?;
                tx.save_checkpoint(name, saved, at).await?;
                tx.commit().await?;
                saved = at;
                last_save = tokio::time::Instant::now();
            }
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(store.poll_interval()) => {}
                _ = platform.shutdown.wait() => return Ok(()),
            }
            continue;
        }
        let n = scan.events.len();
        let newest = scan.events.last().map(|e| e.recorded_at_ms).unwrap_or(0);
        let wanted: Vec<Decoded> = scan
            .events
            .into_iter()
            .filter_map(|r| {
                let position = r.position;
                let d = crate::codec::decode(r);
                if d.is_none() {
                    tracing::error!(follower = name, position, "undecodable event skipped");
                }
                d
            })
            .filter(|d| p.wants(&d.kind))
            .collect();
        if !wanted.is_empty() {
            let write_at = std::time::Instant::now();
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            crate::metrics::observe_ms(
                crate::metrics::FOLLOWER_BATCH_MS,
                &[("follower", name), ("stage", "read")],
                ms(write_at - read_at),
            );
            let span = tracing::info_span!("follow", follower = name, events = wanted.len());
            if let Some(tp) = wanted.iter().map(|d| d.meta.traceparent.as_str()).find(|t| !t.is_empty()) {
                crate::telemetry::set_parent_from_traceparent(&span, tp);
            }
            async {
                let prepared = p.prepare(&wanted).await?;
                let mut tx = if p.background() { sink.begin_background().await? } else { sink.begin().await? };
                p.apply(&mut tx, &wanted, prepared).await?;
                tx.save_checkpoint(name, saved, last).await?;
                tx.commit().await?;
                p.committed();
                anyhow::Ok(())
            }
            .instrument(span)
            .await
            .inspect_err(|_| p.abandoned())?;
            crate::metrics::observe_ms(
                crate::metrics::FOLLOWER_BATCH_MS,
                &[("follower", name), ("stage", "write")],
                ms(write_at.elapsed()),
            );
            saved = last;
            last_save = tokio::time::Instant::now();
        }
        at = last;
        crate::metrics::add(crate::metrics::FOLLOWER_EVENTS, &[("follower", name)], n as i64);
        crate::metrics::set(crate::metrics::FOLLOWER_POSITION, &[("follower", name)], at.position);
        let lag = (platform.clock.now_ms() - newest).max(0);
        crate::metrics::set(crate::metrics::FOLLOWER_LAG_MS, &[("follower", name)], lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_follower_waits_twice_as_long_each_time_up_to_ten_seconds() {
        let ms: Vec<u128> = FOLLOWER_BACKOFF.build().take(10).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000]);
    }
}
