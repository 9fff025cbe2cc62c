//! SQLite backend: WAL, one writer connection (so commit order is position order, and a
//! reader of the global log can never see a gap), a pool of reader connections.
use crate::{AppendOutcome, Checkpoint, RecordedEvent, Result, Row, StoreError, StreamAppend, Value, assign_versions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row as _, SqliteConnection, SqlitePool, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Rows per INSERT statement: 8 parameters each, well under SQLite's 32766 limit.
const ROWS_PER_INSERT: usize = 1000;

/// Turns off SQLite's memory statistics, process-wide, before its first connection: with them
/// on, every allocation SQLite makes (a statement's sub-journal copies each page it touches)
/// takes a global mutex to count itself, which the writer thread felt. Only possible before
/// SQLite initialises; should a connection have been opened already, the setting stays as it
/// was, which changes nothing but the speed.
fn without_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called once, before this process opens any connection
        // through this store; SQLite refuses it (SQLITE_MISUSE) if it has initialised already.
        let rc =
            unsafe { libsqlite3_sys::sqlite3_config(libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(rc, "SQLite was initialised already; its memory statistics stay on");
        }
    });
}

#[derive(Clone)]
pub(crate) struct Sqlite {
    /// Exactly one connection: every write goes through it, in order.
    pub(crate) writer: SqlitePool,
    readers: SqlitePool,
}

impl Sqlite {
    pub(crate) async fn open(url: &str, max_readers: u32, commits: tokio::sync::watch::Receiver<u64>) -> Result<Self> {
        without_memory_statistics();
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; an OS crash may lose the last
            // transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Keep the WAL file from staying large after a burst.
            .pragma("journal_size_limit", "67108864");
        // The writer never checkpoints: copying the WAL into the database happens on a
        // connection of its own, beside the writer rather than inside its commits.
        // No health check before each use (sqlx pings by default): a connection here is a
        // thread of this process, not a socket that may have died, and the ping is a round trip
        // to that thread on every acquire — every query and transaction.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(300))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        let checkpointer = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
        spawn_checkpointer(checkpointer, writer.clone(), commits);
        let readers = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_readers.max(2))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Sqlite { writer, readers })
    }

    /// IMMEDIATE takes the write lock at once: should a second process open the file, it
    /// waits here instead of failing half-way through a transaction.
    ///
    /// Begun on a task of its own: a caller dropped while waiting (a gRPC or HTTP handler whose
    /// client went away) must not leave the one writer connection inside a transaction that
    /// nothing will end. The task finishes the begin, and an unclaimed transaction is dropped,
    /// which rolls it back.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let writer = self.writer.clone();
        let begun = tokio::spawn(async move { writer.begin_with("BEGIN IMMEDIATE").await });
        Ok(begun.await.map_err(|e| StoreError::Invalid(format!("beginning a transaction: {e}")))??)
    }

    pub(crate) async fn read_stream(&self, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>> {
        read_stream_on(&self.readers, stream, after_version).await
    }

    pub(crate) async fn read_all(&self, after: Checkpoint, limit: i64) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(
            "SELECT position, stream, version, event_type, event_id, payload, metadata, recorded_at
             FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .bind(after.position)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    /// The events of `types` among the `window` after `after` (at most `limit`), and the
    /// position the window ended at, both from one statement and so from one snapshot.
    pub(crate) async fn read_types(
        &self,
        after: Checkpoint,
        window: i64,
        limit: i64,
        types: &[&str],
    ) -> Result<(Vec<RecordedEvent>, Option<Checkpoint>)> {
        let sql = format!(
            "WITH w AS MATERIALIZED (
                 SELECT position, event_type FROM events WHERE position > ?1 ORDER BY position LIMIT ?2),
             m AS (SELECT position FROM w WHERE event_type IN ({}) ORDER BY position LIMIT ?3)
             SELECT e.position, e.stream, e.version, e.event_type, e.event_id, e.payload, e.metadata, e.recorded_at
             FROM m JOIN events e ON e.position = m.position
             UNION ALL
             SELECT MAX(position), NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM w",
            (0..types.len()).map(|i| format!("?{}", i + 4)).collect::<Vec<_>>().join(",")
        );
        let mut q = sqlx::query(&sql).bind(after.position).bind(window).bind(limit);
        for t in types {
            q = q.bind(*t);
        }
        let rows = q.fetch_all(&self.readers).await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut end = None;
        for r in &rows {
            if r.try_get::<Option<String>, _>(1)?.is_none() {
                end = r.try_get::<Option<i64>, _>(0)?.map(|position| Checkpoint { transaction_id: 0, position });
            } else {
                events.push(decode_event(r)?);
            }
        }
        Ok((events, end))
    }

    pub(crate) async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut conn = self.readers.acquire().await?;
        fetch(&mut conn, sql, params).await
    }

    pub(crate) async fn query_as<T: crate::FromRow>(&self, sql: &str, params: &[Value]) -> Result<Vec<T>> {
        let mut conn = self.readers.acquire().await?;
        fetch_as(&mut conn, sql, params).await
    }
}

/// WAL frames (pages) past which the checkpointer makes the WAL start over: 64 MB of 4 KB pages.
const RESTART_FRAMES: i64 = 16_384;

/// How long a restart checkpoint waits for the readers of the moment before it gives up.
const RESTART_WAIT_MS: u64 = 100;

/// Checkpoints the WAL passively (never blocking the writer or readers) four times a second
/// while the store is open; with nothing new in the WAL that costs next to nothing.
fn spawn_checkpointer(pool: SqlitePool, writer: SqlitePool, commits: tokio::sync::watch::Receiver<u64>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            // Stop once the store is gone (its commit signal with it).
            if commits.has_changed().is_err() {
                return;
            }
            let frames: Result<(i64, i64, i64)> =
                async { Ok(sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await?) }.await;
            match frames {
                // Readers that never pause keep the WAL from starting over, so it grows
                // without bound under load. Past `RESTART_FRAMES`, with everything copied, a
                // RESTART checkpoint on the writer connection makes the next write start the
                // WAL anew. It takes its turn as writers do, so no write waits on it beyond
                // that, and it waits for the readers of the moment at most `RESTART_WAIT_MS`
                // (then gives up until the next round).
                Ok((_, log, copied)) if log > RESTART_FRAMES && copied == log => {
                    if let Err(e) = restart_wal(&writer).await {
                        tracing::warn!(error = %e, "WAL restart checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    });
}

async fn restart_wal(writer: &SqlitePool) -> Result<()> {
    let mut conn = writer.acquire().await?;
    sqlx::query(&format!("PRAGMA busy_timeout = {RESTART_WAIT_MS}")).execute(&mut *conn).await?;
    let done: Result<(i64, i64, i64)> =
        async { Ok(sqlx::query_as("PRAGMA wal_checkpoint(RESTART)").fetch_one(&mut *conn).await?) }.await;
    if let Err(e) = sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *conn).await {
        // Not back to the pool with a short timeout: the pool opens a fresh writer instead.
        conn.close_on_drop();
        return Err(e.into());
    }
    let (busy, log, copied) = done?;
    tracing::debug!(busy, log, copied, "WAL restart checkpoint");
    Ok(())
}

fn decode_event(r: &sqlx::sqlite::SqliteRow) -> Result<RecordedEvent> {
    let id: Vec<u8> = r.try_get(4)?;
    Ok(RecordedEvent {
        position: r.try_get(0)?,
        transaction_id: 0,
        stream: r.try_get(1)?,
        version: r.try_get::<i64, _>(2)? as u64,
        event_type: r.try_get(3)?,
        event_id: uuid::Uuid::from_slice(&id).map_err(|e| StoreError::Invalid(e.to_string()))?,
        payload: r.try_get(5)?,
        metadata: r.try_get(6)?,
        recorded_at_ms: r.try_get(7)?,
    })
}

/// Checks versions and inserts every accepted append of the batch inside `conn`'s transaction.
pub(crate) async fn write_batch(
    conn: &mut SqliteConnection,
    appends: &[StreamAppend],
    all_or_nothing: bool,
) -> Result<Vec<Result<AppendOutcome>>> {
    let mut streams: Vec<&str> = appends.iter().map(|a| a.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    // Each stream's last version, by one seek to its last entry in the stream index; the names
    // go in as one JSON array (a parameter each would cost SQLite more than the seeks).
    let mut current: HashMap<String, u64> = HashMap::with_capacity(streams.len());
    let names = serde_json::to_string(&streams).map_err(|e| StoreError::Invalid(format!("stream names: {e}")))?;
    let found = sqlx::query_as::<_, (String, i64)>(
        "SELECT stream, version FROM (SELECT value AS stream,
           (SELECT version FROM events WHERE stream = value ORDER BY version DESC LIMIT 1) AS version
         FROM json_each(?1)) WHERE version IS NOT NULL",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await?;
    for (stream, v) in found {
        current.insert(stream, v as u64);
    }
    let mut outcomes = assign_versions(appends, &mut current);
    if all_or_nothing {
        if let Some(i) = outcomes.iter().position(|o| o.is_err()) {
            return Err(outcomes.swap_remove(i).unwrap_err());
        }
    }
    let rows: Vec<(&str, u64, &crate::NewEvent)> = appends
        .iter()
        .zip(&outcomes)
        .filter_map(|(a, o)| o.as_ref().ok().map(|o| (a, o.first_version)))
        .flat_map(|(a, first)| a.events.iter().enumerate().map(move |(i, e)| (a.stream.as_str(), first + i as u64, e)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for (stream, version, e) in chunk {
            q = q
                .bind(*stream)
                .bind(*version as i64)
                .bind(e.event_type.as_str())
                .bind(e.event_id.as_bytes().as_slice())
                .bind(e.payload.as_slice())
                .bind(e.metadata.as_slice())
                .bind(e.recorded_at_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(outcomes)
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(100 + rows * 24);
    sql.push_str("INSERT INTO events (stream, version, event_type, event_id, payload, metadata, recorded_at) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?)");
    }
    sql
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<String>),
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.as_str()),
            Value::Bytes(v) => q.bind(v.as_slice()),
        };
    }
    q
}

pub(crate) async fn execute(conn: &mut SqliteConnection, sql: &str, params: &[Value]) -> Result<u64> {
    Ok(bind(sqlx::query(sql), params).execute(conn).await?.rows_affected())
}

pub(crate) async fn fetch_as<T: crate::FromRow>(
    conn: &mut SqliteConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<T>> {
    let rows = bind(sqlx::query(sql), params).fetch_all(conn).await?;
    Ok(rows
        .iter()
        .map(|r| <T as sqlx::FromRow<sqlx::sqlite::SqliteRow>>::from_row(r))
        .collect::<std::result::Result<_, _>>()?)
}

pub(crate) async fn fetch(conn: &mut SqliteConnection, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
    let rows = bind(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| {
                    let raw = r.try_get_raw(i)?;
                    if raw.is_null() {
                        return Ok(Value::Null);
                    }
                    Ok(match raw.type_info().name() {
                        "INTEGER" | "BOOLEAN" => Value::Int(r.try_get(i)?),
                        "BLOB" => Value::Bytes(r.try_get(i)?),
                        "REAL" => {
                            return Err(StoreError::Invalid(
                                "REAL columns are not used: money and time are integers".into(),
                            ));
                        }
                        _ => Value::Text(r.try_get(i)?),
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Row)
        })
        .collect()
}

/// A stream's events after `after_version`, read on `conn` (a reader, or the writer's
/// transaction, which then sees its own appends).
pub(crate) async fn read_stream_on<'e, E>(conn: E, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let rows = sqlx::query(
        "SELECT position, stream, version, event_type, event_id, payload, metadata, recorded_at
         FROM events WHERE stream = ?1 AND version > ?2 ORDER BY version",
    )
    .bind(stream)
    .bind(after_version as i64)
    .fetch_all(conn)
    .await?;
    rows.iter().map(decode_event).collect()
}
