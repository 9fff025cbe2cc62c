//! The platform clock: the system clock, or a test clock kept in the database so that every
//! process of a deployment reads the same simulated time.
use anyhow::Context;
use autodebit_domain::{Clock, SystemClock, TestClock, Timestamp, clock::from_millis};
use autodebit_eventstore::{EventStore, Migrations, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The clock's table (the test clock's time).
pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("clock", 100..200);

/// How often a process looks for a test clock moved by another process.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct PlatformClock {
    clock: Arc<dyn Clock>,
    test: Option<(TestClock, EventStore)>,
    moved: watch::Sender<i64>,
}

impl PlatformClock {
    pub fn system() -> Self {
        PlatformClock { clock: Arc::new(SystemClock), test: None, moved: watch::channel(0).0 }
    }

    /// A test clock shared through `store`. The first process to start sets it to 10:00
    /// Beijing time (02:00 UTC) of today's date — inside the default charge window, so a run
    /// behaves the same whatever the hour it starts at; later processes, and restarts, pick up
    /// wherever it stands.
    pub async fn test(store: &EventStore, shutdown: &crate::Shutdown) -> anyhow::Result<Self> {
        store.migrate(&MIGRATIONS).await?;
        let mut tx = store.begin().await?;
        tx.execute(
            "INSERT INTO platform_clock (id, now_ms) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[Value::Int(test_clock_start())],
        )
        .await?;
        tx.commit().await?;
        let now = read(store).await?;
        let test = TestClock::at(from_millis(now));
        let this = PlatformClock {
            clock: Arc::new(test.clone()),
            test: Some((test, store.clone())),
            moved: watch::channel(now).0,
        };
        let (follower, stop) = (this.clone(), shutdown.clone());
        tokio::spawn(async move {
            while !stop.is_triggered() {
                tokio::time::sleep(FOLLOW_INTERVAL).await;
                if let Some((_, store)) = &follower.test {
                    match read(store).await {
                        Ok(ms) => follower.observe(ms),
                        Err(e) => tracing::debug!(error = %e, "reading the test clock"),
                    }
                }
            }
        });
        Ok(this)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    pub fn is_test(&self) -> bool {
        self.test.is_some()
    }

    /// The clock as a shareable `Clock` for domain code.
    pub fn as_clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Changes whenever the test clock moves (never, for the system clock).
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.moved.subscribe()
    }

    /// Moves the shared test clock forward and returns the new time.
    pub async fn advance(&self, by: Duration) -> anyhow::Result<Timestamp> {
        let (_, store) =
            self.test.as_ref().context("the platform runs on the system clock; start it with --test-clock")?;
        let ms = i64::try_from(by.as_millis()).context("advance is too large")?;
        let mut tx = store.begin().await?;
        let rows = tx
            .query("UPDATE platform_clock SET now_ms = now_ms + $1 WHERE id = 1 RETURNING now_ms", &[Value::Int(ms)])
            .await?;
        tx.commit().await?;
        let now = rows.first().and_then(|r| r.i64(0)).context("the test clock row is missing")?;
        self.observe(now);
        Ok(from_millis(now))
    }

    fn observe(&self, ms: i64) {
        if let Some((test, _)) = &self.test {
            let before = test.now().timestamp_millis();
            let now = test.catch_up_to_millis(ms).timestamp_millis();
            if now != before {
                self.moved.send_replace(now);
            }
        }
    }
}

/// Where the test clock kept in `store` stands, if a platform ran on one there.
pub async fn stored_test_clock(store: &EventStore) -> anyhow::Result<Option<i64>> {
    store.migrate(&MIGRATIONS).await?;
    let rows = store.query("SELECT now_ms FROM platform_clock WHERE id = 1", &[]).await?;
    Ok(rows.first().and_then(|r| r.i64(0)))
}

/// Sets the test clock kept in `store` to `now_ms`, before a platform starts on it: a log
/// imported from another database carries on at the time it was exported.
pub async fn set_test_clock(store: &EventStore, now_ms: i64) -> anyhow::Result<()> {
    store.migrate(&MIGRATIONS).await?;
    let mut tx = store.begin().await?;
    tx.execute(
        "INSERT INTO platform_clock (id, now_ms) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET now_ms = excluded.now_ms",
        &[Value::Int(now_ms)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn read(store: &EventStore) -> anyhow::Result<i64> {
    let rows = store.query("SELECT now_ms FROM platform_clock WHERE id = 1", &[]).await?;
    rows.first().and_then(|r| r.i64(0)).context("the test clock row is missing")
}

/// Today's date (UTC) at 02:00 UTC, in milliseconds.
fn test_clock_start() -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    now - now.rem_euclid(DAY_MS) + 2 * 3_600_000
}

/// The platform clock is a clock, for code that takes one (the simulator's book of debits).
impl autodebit_domain::clock::Clock for PlatformClock {
    fn now(&self) -> autodebit_domain::Timestamp {
        PlatformClock::now(self)
    }
}
