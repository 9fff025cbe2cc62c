//! The event log: streams with optimistic concurrency, one ordered global log, consumer
//! checkpoints written in the same transaction as their effects, and live following.
//!
//! Two backends behind one API: SQLite (embedded, WAL, one writer connection) and PostgreSQL
//! (the xid8 horizon keeps the global log gap-free for readers; see `postgres.rs`).
//! The store knows events as bytes plus metadata; it knows no service.

mod ceiling;
mod migrate;
mod postgres;
mod sqlite;
mod value;
mod writer;

pub mod testing;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use migrate::{LOG_MIGRATIONS, Migrations, pending_migrations};
/// The database error type, for callers that need to tell constraint violations apart.
pub use sqlx::Error as SqlxError;
pub use value::{Row, Value};

/// A row type read by column name: `#[derive(sqlx::FromRow)]` on a struct whose fields are
/// `i64`, `String`, `Vec<u8>` or `Option`s of them serves both backends.
pub trait FromRow:
    for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin
{
}
impl<T> FromRow for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin
{
}

/// What the writer expects a stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (its last event's version).
    Exact(u64),
}

impl ExpectedVersion {
    fn admits(&self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => *v == current,
        }
    }
}

/// An event to append: its type, payload and metadata are opaque bytes to the store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<u8>,
    /// Wall-clock milliseconds at which the writer recorded it.
    pub recorded_at_ms: i64,
}

/// Events for one stream, appended together or not at all.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Where an append left its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub first_version: u64,
    pub last_version: u64,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: i64,
    /// The writing transaction's id on PostgreSQL; 0 on SQLite.
    pub transaction_id: u64,
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub event_id: Uuid,
    pub payload: Vec<u8>,
    pub metadata: Vec<u8>,
    pub recorded_at_ms: i64,
}

impl RecordedEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { transaction_id: self.transaction_id, position: self.position }
    }
}

/// What [`EventStore::read_types`] found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The events of the asked-for types, in log order.
    pub events: Vec<RecordedEvent>,
    /// How far the scan went: every event up to here that is not in `events` is of another type.
    pub through: Checkpoint,
}

/// A place in the global log: everything up to and including it has been read.
/// Ordered by (transaction id, position), which is commit-safe order on both backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    pub transaction_id: u64,
    pub position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream} is at version {actual}, expected {expected:?}")]
    Conflict { stream: String, expected: ExpectedVersion, actual: u64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the event store is shut down")]
    Closed,
    /// The group-commit transaction this append shared failed (the database failed, or its
    /// commit's outcome is unknown); the append may or may not have been written.
    #[error("append failed with its batch: {0}")]
    Batch(String),
    /// Another runner of this consumer moved its checkpoint: this runner has lost its lease.
    #[error("consumer {0}'s checkpoint was moved by another runner")]
    CheckpointMoved(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database is underneath; services pick dialect details (e.g. row locks) from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl BackendKind {
    /// A table with one row per element of the JSON array bound as parameter `$n`, the
    /// element in column `value` (`value->>i` reads its i-th item as text): how one statement
    /// takes a thousand rows where a statement per row would hold the writer a thousand times
    /// as many round trips. On PostgreSQL the array is read as `jsonb`, parsed once: as `json`
    /// each element's text is parsed again for every item read from it, which took twice as
    /// long on 5,000 rows of seven items.
    pub fn json_rows(self, n: usize) -> String {
        match self {
            BackendKind::Sqlite => format!("json_each(${n})"),
            BackendKind::Postgres => format!("jsonb_array_elements(CAST(${n} AS TEXT)::jsonb)"),
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    pub url: String,
    /// Connections for readers (and, on PostgreSQL, writers).
    pub max_connections: u32,
    /// How many single-command appends may share one transaction (group commit).
    pub group_commit_max: usize,
    /// Concurrent group-commit writers (PostgreSQL; SQLite always has one).
    pub writers: usize,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions { url: url.into(), max_connections: 16, group_commit_max: 512, writers: 4 }
    }
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

struct Inner {
    backend: Backend,
    commits: watch::Sender<u64>,
    appender: mpsc::Sender<writer::Job>,
    gate: Gate,
    /// The connection pool's size (readers, on SQLite).
    max_connections: u32,
}

/// Lets background writers (projections) stand aside for foreground ones on SQLite's one
/// writer connection, whose waiters are otherwise served first come, first served.
#[derive(Default)]
struct Gate {
    /// Foreground transactions waiting for the writer.
    waiting: std::sync::atomic::AtomicUsize,
    clear: tokio::sync::Notify,
}

/// The longest a background transaction stands aside before it queues anyway.
const BACKGROUND_YIELD_AT_MOST: Duration = Duration::from_millis(500);

/// Counts a foreground transaction as waiting until it has the writer (or gave up).
struct Waiting<'a>(&'a Gate);

impl<'a> Waiting<'a> {
    fn new(gate: &'a Gate) -> Self {
        gate.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(gate)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.clear.notify_waiters();
        }
    }
}

impl Gate {
    /// Returns once no foreground transaction waits, or after `BACKGROUND_YIELD_AT_MOST`.
    async fn stand_aside(&self) {
        let deadline = tokio::time::Instant::now() + BACKGROUND_YIELD_AT_MOST;
        loop {
            let cleared = self.clear.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if self.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                _ = cleared => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

/// The event log. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

impl EventStore {
    /// Opens (and migrates) the store at `opts.url`.
    pub async fn open(opts: StoreOptions) -> Result<Self> {
        let (commits, _) = watch::channel(0u64);
        let backend = if opts.url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::Sqlite::open(&opts.url, opts.max_connections, commits.subscribe()).await?)
        } else if opts.url.starts_with("postgres:") || opts.url.starts_with("postgresql:") {
            Backend::Postgres(postgres::Postgres::open(&opts.url, opts.max_connections, commits.clone()).await?)
        } else {
            return Err(StoreError::Invalid(format!(
                "database url {:?} must start with sqlite: or postgres:",
                opts.url
            )));
        };
        let writers = match backend {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => opts.writers.max(1),
        };
        let (appender, jobs) = mpsc::channel(opts.group_commit_max.max(1) * 4);
        writer::spawn(backend.clone(), commits.clone(), jobs, writers, opts.group_commit_max.max(1));
        let store = EventStore {
            inner: Arc::new(Inner {
                backend,
                commits,
                appender,
                gate: Gate::default(),
                max_connections: opts.max_connections,
            }),
        };
        store.migrate(&LOG_MIGRATIONS).await?;
        if let Backend::Postgres(b) = &store.inner.backend {
            b.check_checkpoints_behind_xids().await?;
        }
        Ok(store)
    }

    pub fn kind(&self) -> BackendKind {
        match self.inner.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The size of the connection pool (of readers, on SQLite).
    pub fn max_connections(&self) -> u32 {
        self.inner.max_connections
    }

    /// Appends to one stream through the group-commit writer: concurrent callers share a
    /// transaction, each still checked against its own expected version.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        if events.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one event".into()));
        }
        let (reply, rx) = oneshot::channel();
        let job = writer::Job { append: StreamAppend { stream: stream.to_string(), expected, events }, reply };
        self.inner.appender.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends to several streams in one transaction: all or nothing.
    pub async fn append_many(&self, appends: &[StreamAppend]) -> Result<Vec<AppendOutcome>> {
        let mut tx = self.begin().await?;
        let out = tx.append_many(appends).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// A stream's events after `after_version`, in order.
    pub async fn read_stream(&self, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.read_stream(stream, after_version).await,
            Backend::Postgres(b) => b.read_stream(stream, after_version).await,
        }
    }

    /// Up to `limit` events of the global log after `after`, in commit-safe order: an event
    /// that is not yet returned can never later appear before one that was.
    pub async fn read_all(&self, after: Checkpoint, limit: i64) -> Result<Vec<RecordedEvent>> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.read_all(after, limit).await,
            Backend::Postgres(b) => b.read_all(after, limit).await,
        }
    }

    /// The whole log from its beginning, `limit` events at a time.
    pub fn pages(&self, limit: i64) -> Pages<'_> {
        Pages { store: self, at: Checkpoint::default(), limit }
    }

    /// Up to `limit` events of the types in `types` among the next `window` events of the
    /// global log after `after`, in the same commit-safe order as [`read_all`]. The events of
    /// other types are passed over inside the database, and the answer says how far the scan
    /// went, so a follower that wants few types moves past the rest without reading them.
    ///
    /// [`read_all`]: EventStore::read_all
    pub async fn read_types(&self, after: Checkpoint, window: i64, limit: i64, types: &[&str]) -> Result<Scan> {
        if types.is_empty() {
            let events = self.read_all(after, limit).await?;
            let through = events.last().map(|e| e.checkpoint()).unwrap_or(after);
            return Ok(Scan { events, through });
        }
        let (mut events, end) = match &self.inner.backend {
            Backend::Sqlite(b) => b.read_types(after, window, limit, types).await?,
            Backend::Postgres(b) => b.read_types(after, window, limit, types).await?,
        };
        events.sort_unstable_by_key(|e| e.checkpoint());
        let through = if events.len() as i64 >= limit {
            events.last().map(|e| e.checkpoint()).unwrap_or(after)
        } else {
            end.unwrap_or(after)
        };
        Ok(Scan { events, through })
    }

    /// How many events the log holds.
    pub async fn count(&self) -> Result<i64> {
        let rows = self.query("SELECT COUNT(*) FROM events", &[]).await?;
        Ok(rows.first().and_then(|r| r.i64(0)).unwrap_or(0))
    }

    /// A receiver that changes whenever new events may have been committed.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// How long a follower that found nothing new waits before looking again anyway.
    pub fn poll_interval(&self) -> Duration {
        match self.inner.backend {
            // Woken in-process on every commit; polling only guards against a missed wake.
            Backend::Sqlite(_) => Duration::from_millis(500),
            // A notification can arrive before the horizon passes the new rows.
            Backend::Postgres(_) => Duration::from_millis(50),
        }
    }

    pub async fn load_checkpoint(&self, consumer: &str) -> Result<Checkpoint> {
        let rows = self
            .query("SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1", &[consumer.into()])
            .await?;
        Ok(rows
            .first()
            .map(|r| Checkpoint { transaction_id: r.i64(0).unwrap_or(0) as u64, position: r.i64(1).unwrap_or(0) })
            .unwrap_or_default())
    }

    /// Begins a write transaction. On SQLite this waits for the one writer connection.
    pub async fn begin(&self) -> Result<Tx> {
        self.begin_as(true).await
    }

    async fn begin_as(&self, foreground: bool) -> Result<Tx> {
        let inner = match &self.inner.backend {
            Backend::Sqlite(b) => {
                let _waiting = foreground.then(|| Waiting::new(&self.inner.gate));
                TxInner::Sqlite(b.begin().await?)
            }
            Backend::Postgres(b) => TxInner::Postgres(b.begin().await?),
        };
        Ok(Tx { inner, appended: false, commits: self.inner.commits.clone() })
    }

    /// Begins a write transaction for background work (projections that can run behind):
    /// on SQLite it first lets the foreground transactions waiting for the writer go (for at
    /// most half a second), so that a burst of projection work does not queue ahead of them.
    pub async fn begin_background(&self) -> Result<Tx> {
        if let Backend::Sqlite(_) = &self.inner.backend {
            self.inner.gate.stand_aside().await;
        }
        self.begin_as(false).await
    }

    /// Runs a read-only query on a reader connection. SQL uses `$1`-style placeholders.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.query(sql, params).await,
            Backend::Postgres(b) => b.query(sql, params).await,
        }
    }

    /// Runs a read-only query on a reader connection; rows as `T`, read by column name.
    pub async fn query_as<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<Vec<T>> {
        match &self.inner.backend {
            Backend::Sqlite(b) => b.query_as(sql, params).await,
            Backend::Postgres(b) => b.query_as(sql, params).await,
        }
    }

    /// Takes the named lease, waiting until it is free: only one holder at a time across all
    /// processes on the same database. Released when the returned guard drops.
    pub async fn acquire_lease(&self, name: &str) -> Result<Lease> {
        match &self.inner.backend {
            // One process owns an SQLite file, and it starts each follower once.
            Backend::Sqlite(_) => Ok(Lease { _conn: None }),
            Backend::Postgres(b) => Ok(Lease { _conn: Some(b.lease(name).await?) }),
        }
    }
}

/// Held while a follower runs; dropping it frees the lease.
pub struct Lease {
    _conn: Option<sqlx::PgConnection>,
}

pub(crate) enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// The log read a page at a time (see [`EventStore::pages`]).
pub struct Pages<'a> {
    store: &'a EventStore,
    at: Checkpoint,
    limit: i64,
}

impl Pages<'_> {
    /// The next page, or `None` at the end of the log.
    pub async fn next(&mut self) -> Result<Option<Vec<RecordedEvent>>> {
        let page = self.store.read_all(self.at, self.limit).await?;
        match page.last() {
            None => Ok(None),
            Some(last) => {
                self.at = last.checkpoint();
                Ok(Some(page))
            }
        }
    }
}

/// A write transaction: appends, checkpoints and a service's own table writes commit together.
/// Dropped without `commit`, it rolls back.
pub struct Tx {
    inner: TxInner,
    appended: bool,
    commits: watch::Sender<u64>,
}

impl Tx {
    pub fn kind(&self) -> BackendKind {
        match self.inner {
            TxInner::Sqlite(_) => BackendKind::Sqlite,
            TxInner::Postgres(_) => BackendKind::Postgres,
        }
    }

    pub async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        let out = self.append_many(&[StreamAppend { stream: stream.to_string(), expected, events }]).await?;
        Ok(out[0])
    }

    /// Appends to several streams; the first version conflict fails the call (and the
    /// transaction should then be dropped).
    pub async fn append_many(&mut self, appends: &[StreamAppend]) -> Result<Vec<AppendOutcome>> {
        self.write(appends, true).await?.into_iter().collect()
    }

    /// Appends every append whose expected version holds and answers each on its own; a
    /// conflicting append is skipped, the others are written.
    pub async fn append_each(&mut self, appends: &[StreamAppend]) -> Result<Vec<Result<AppendOutcome>>> {
        self.write(appends, false).await
    }

    async fn write(&mut self, appends: &[StreamAppend], all_or_nothing: bool) -> Result<Vec<Result<AppendOutcome>>> {
        let outcomes = match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite::write_batch(tx, appends, all_or_nothing).await?,
            TxInner::Postgres(tx) => postgres::write_batch(tx, appends, all_or_nothing).await?,
        };
        self.appended = true;
        Ok(outcomes)
    }

    /// Records that `consumer` has taken in everything up to `at`, moving it from `from` (the
    /// checkpoint it loaded or last saved). If another runner moved it meanwhile, this fails
    /// with `CheckpointMoved`, and the transaction must be dropped: its effects are someone
    /// else's to make. So even two runners of one consumer apply each event once.
    pub async fn save_checkpoint(&mut self, consumer: &str, from: Checkpoint, at: Checkpoint) -> Result<()> {
        let moved = self
            .execute(
                "UPDATE consumer_checkpoints SET transaction_id = $1, position = $2 \
                 WHERE consumer = $3 AND transaction_id = $4 AND position = $5",
                &[
                    Value::Int(at.transaction_id as i64),
                    Value::Int(at.position),
                    consumer.into(),
                    Value::Int(from.transaction_id as i64),
                    Value::Int(from.position),
                ],
            )
            .await?;
        if moved == 1 {
            return Ok(());
        }
        if from == Checkpoint::default() {
            let created = self
                .execute(
                    "INSERT INTO consumer_checkpoints (consumer, transaction_id, position) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer) DO NOTHING",
                    &[consumer.into(), Value::Int(at.transaction_id as i64), Value::Int(at.position)],
                )
                .await?;
            if created == 1 {
                return Ok(());
            }
        }
        Err(StoreError::CheckpointMoved(consumer.to_string()))
    }

    /// Runs several statements separated by `;`, with no parameters (schema changes).
    pub async fn execute_script(&mut self, sql: &str) -> Result<()> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
            TxInner::Postgres(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Executes one statement; returns the rows it affected.
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite::execute(&mut **tx, sql, params).await,
            TxInner::Postgres(tx) => postgres::execute(&mut **tx, sql, params).await,
        }
    }

    /// A stream's events after `after_version`, read inside the transaction: it sees the
    /// transaction's own appends and, on PostgreSQL, takes no second pool connection.
    pub async fn read_stream(&mut self, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite::read_stream_on(&mut **tx, stream, after_version).await,
            TxInner::Postgres(tx) => postgres::read_stream_on(&mut **tx, stream, after_version).await,
        }
    }

    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite::fetch(&mut **tx, sql, params).await,
            TxInner::Postgres(tx) => postgres::fetch(&mut **tx, sql, params).await,
        }
    }

    /// Rows of `sql` as `T`, its fields read by column name.
    pub async fn query_as<T: FromRow>(&mut self, sql: &str, params: &[Value]) -> Result<Vec<T>> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => sqlite::fetch_as(&mut **tx, sql, params).await,
            TxInner::Postgres(tx) => postgres::fetch_as(&mut **tx, sql, params).await,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        if self.appended {
            self.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }
}

/// Whether an error means "another writer got there first", so the appends are worth
/// retrying one by one, as opposed to a failure of the database itself.
pub(crate) fn is_contention(e: &StoreError) -> bool {
    match e {
        StoreError::Conflict { .. } => true,
        StoreError::Database(sqlx::Error::Database(d)) => {
            // unique violation, serialization failure, deadlock
            matches!(d.code().as_deref(), Some("23505" | "40001" | "40P01"))
        }
        _ => false,
    }
}

/// Decides versions for a batch of appends against the streams' current versions.
/// Returns, per append, its outcome or the conflict; `current` is updated in place so
/// later appends to the same stream in the batch see earlier ones.
pub(crate) fn assign_versions(
    appends: &[StreamAppend],
    current: &mut std::collections::HashMap<String, u64>,
) -> Vec<Result<AppendOutcome>> {
    appends
        .iter()
        .map(|a| {
            let at = current.get(&a.stream).copied().unwrap_or(0);
            if !a.expected.admits(at) {
                return Err(StoreError::Conflict { stream: a.stream.clone(), expected: a.expected, actual: at });
            }
            if a.events.is_empty() {
                return Err(StoreError::Invalid(format!("append to {} has no events", a.stream)));
            }
            let last = at + a.events.len() as u64;
            current.insert(a.stream.clone(), last);
            Ok(AppendOutcome { first_version: at + 1, last_version: last })
        })
        .collect()
}
