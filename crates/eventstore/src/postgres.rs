//! PostgreSQL backend.
//!
//! The global log's hard problem: positions come from a sequence, and transactions commit in
//! a different order than they drew positions, so a reader that has seen position 10 may
//! later find a 9 committed. Every row therefore records the id of the transaction that wrote
//! it (`xid8`), readers order by (transaction id, position) and read only rows of
//! transactions older than every transaction still running (`pg_snapshot_xmin`). A row a
//! reader has not seen can then only come after the pair it checkpointed.
use crate::{AppendOutcome, Checkpoint, RecordedEvent, Result, Row, StoreError, StreamAppend, Value, assign_versions};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Column, ConnectOptions, Connection, PgConnection, PgPool, Row as _, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::watch;

pub(crate) const CHANNEL: &str = "autodebit_events";

#[derive(Clone)]
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
    options: PgConnectOptions,
}

impl Postgres {
    pub(crate) async fn open(url: &str, max_connections: u32, commits: watch::Sender<u64>) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(4))
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        let this = Postgres { pool, options };
        this.spawn_listener(commits);
        Ok(this)
    }

    /// Wakes followers when any process commits events (NOTIFY from the insert trigger).
    fn spawn_listener(&self, commits: watch::Sender<u64>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        if commits.is_closed() || pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "event listener cannot connect; followers fall back to polling");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => commits.send_modify(|n| *n = n.wrapping_add(1)),
                        // The connection dropped: notifications may have been lost, so wake
                        // followers once and reconnect.
                        Ok(None) => commits.send_modify(|n| *n = n.wrapping_add(1)),
                        Err(e) => {
                            if pool.is_closed() {
                                return;
                            }
                            tracing::warn!(error = %e, "event listener failed; reconnecting");
                            break;
                        }
                    }
                    if commits.is_closed() {
                        return;
                    }
                }
            }
        });
    }

    /// Checkpoints hold transaction ids. After a logical dump and restore into another cluster
    /// new transactions get lower ids than the checkpoints, and followers would wait forever:
    /// refuse to start instead. (Physical copies and pg_upgrade keep ids and are safe.)
    pub(crate) async fn check_checkpoints_behind_xids(&self) -> Result<()> {
        let ahead: Vec<String> = sqlx::query_scalar(
            "SELECT consumer FROM consumer_checkpoints
             WHERE transaction_id > pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
        )
        .fetch_all(&self.pool)
        .await?;
        if ahead.is_empty() {
            return Ok(());
        }
        Err(StoreError::Invalid(format!(
            "checkpoints of {} are ahead of this cluster's transaction ids; the log was restored logically \
             into another cluster. Reset those consumers' checkpoints (and their projections) before starting",
            ahead.join(", ")
        )))
    }

    /// Begun on a task of its own, like SQLite's: a caller dropped while waiting must not
    /// return a connection to the pool inside a transaction nothing will end.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let pool = self.pool.clone();
        let begun = tokio::spawn(async move { pool.begin().await });
        Ok(begun.await.map_err(|e| crate::StoreError::Invalid(format!("beginning a transaction: {e}")))??)
    }

    pub(crate) async fn read_stream(&self, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>> {
        read_stream_on(&self.pool, stream, after_version).await
    }

    pub(crate) async fn read_all(&self, after: Checkpoint, limit: i64) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(
            // The text form gets its own name: ORDER BY resolves a bare name to an output column
            // first, and sorting ids as text puts 100000 before 99999.
            "SELECT e.position, e.transaction_id::text AS transaction_id_text, e.stream, e.version, e.event_type,
                    e.event_id, e.payload, e.metadata, e.recorded_at
             FROM events e
             WHERE (e.transaction_id, e.position) > ($1::text::xid8, $2)
               AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY e.transaction_id, e.position
             LIMIT $3",
        )
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_event).collect()
    }

    /// The events of `types` among the `window` after `after` (at most `limit`), and the
    /// place the window ended at, both from one statement and so under one horizon.
    pub(crate) async fn read_types(
        &self,
        after: Checkpoint,
        window: i64,
        limit: i64,
        types: &[&str],
    ) -> Result<(Vec<RecordedEvent>, Option<Checkpoint>)> {
        let rows = sqlx::query(
            "WITH w AS MATERIALIZED (
                 SELECT e.transaction_id, e.position, e.event_type FROM events e
                 WHERE (e.transaction_id, e.position) > ($1::text::xid8, $2)
                   AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY e.transaction_id, e.position
                 LIMIT $3),
             m AS (SELECT transaction_id, position FROM w WHERE event_type = ANY($5)
                   ORDER BY transaction_id, position LIMIT $4)
             SELECT e.position, e.transaction_id::text AS transaction_id_text, e.stream, e.version, e.event_type,
                    e.event_id, e.payload, e.metadata, e.recorded_at
             FROM m JOIN events e ON e.transaction_id = m.transaction_id AND e.position = m.position
             UNION ALL
             (SELECT w.position, w.transaction_id::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM w
              ORDER BY w.transaction_id DESC, w.position DESC LIMIT 1)",
        )
        .bind(after.transaction_id.to_string())
        .bind(after.position)
        .bind(window)
        .bind(limit)
        .bind(types)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut end = None;
        for r in &rows {
            if r.try_get::<Option<String>, _>(2)?.is_none() {
                let tx: String = r.try_get(1)?;
                end = Some(Checkpoint {
                    transaction_id: tx.parse().map_err(|_| StoreError::Invalid(format!("bad transaction id {tx}")))?,
                    position: r.try_get(0)?,
                });
            } else {
                events.push(decode_event(r)?);
            }
        }
        Ok((events, end))
    }

    pub(crate) async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, sql, params).await
    }

    pub(crate) async fn query_as<T: crate::FromRow>(&self, sql: &str, params: &[Value]) -> Result<Vec<T>> {
        let mut conn = self.pool.acquire().await?;
        fetch_as(&mut conn, sql, params).await
    }

    /// A session-level advisory lock on a connection of its own, held until it closes.
    pub(crate) async fn lease(&self, name: &str) -> Result<PgConnection> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))").bind(name).execute(&mut conn).await?;
        Ok(conn)
    }
}

fn decode_event(r: &sqlx::postgres::PgRow) -> Result<RecordedEvent> {
    let tx: String = r.try_get(1)?;
    Ok(RecordedEvent {
        position: r.try_get(0)?,
        transaction_id: tx.parse().map_err(|_| StoreError::Invalid(format!("bad transaction id {tx}")))?,
        stream: r.try_get(2)?,
        version: r.try_get::<i64, _>(3)? as u64,
        event_type: r.try_get(4)?,
        event_id: r.try_get(5)?,
        payload: r.try_get(6)?,
        metadata: r.try_get(7)?,
        recorded_at_ms: r.try_get(8)?,
    })
}

/// Checks versions and inserts every accepted append of the batch in one statement.
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
    all_or_nothing: bool,
) -> Result<Vec<Result<AppendOutcome>>> {
    let mut streams: Vec<&str> = appends.iter().map(|a| a.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    // One backward index probe per stream; written so that no plan can turn it into a scan.
    let found: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT s.stream, (SELECT e.version FROM events e WHERE e.stream = s.stream ORDER BY e.version DESC LIMIT 1)
         FROM UNNEST($1::text[]) AS s(stream)",
    )
    .bind(&streams)
    .fetch_all(&mut *conn)
    .await?;
    let mut current: HashMap<String, u64> = found.into_iter().filter_map(|(s, v)| v.map(|v| (s, v as u64))).collect();
    let mut outcomes = assign_versions(appends, &mut current);
    if all_or_nothing {
        if let Some(i) = outcomes.iter().position(|o| o.is_err()) {
            return Err(outcomes.swap_remove(i).unwrap_err());
        }
    }

    let n: usize = appends.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|(a, _)| a.events.len()).sum();
    if n > 0 {
        let mut stream = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut event_type = Vec::with_capacity(n);
        let mut event_id = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut recorded_at = Vec::with_capacity(n);
        // Rows go in sorted by (stream, version), so two transactions writing the same streams
        // take their index locks in one order and cannot deadlock.
        let mut order: Vec<(&str, u64, &crate::NewEvent)> = Vec::with_capacity(n);
        for (a, o) in appends.iter().zip(&outcomes) {
            let Ok(o) = o else { continue };
            for (i, e) in a.events.iter().enumerate() {
                order.push((a.stream.as_str(), o.first_version + i as u64, e));
            }
        }
        order.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        for (s, v, e) in order {
            stream.push(s);
            version.push(v as i64);
            event_type.push(e.event_type.as_str());
            event_id.push(e.event_id);
            payload.push(e.payload.as_slice());
            metadata.push(e.metadata.as_slice());
            recorded_at.push(e.recorded_at_ms);
        }
        let res = sqlx::query(
            "INSERT INTO events (stream, version, event_type, event_id, payload, metadata, recorded_at)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::uuid[], $5::bytea[], $6::bytea[], $7::bigint[])",
        )
        .bind(&stream)
        .bind(&version)
        .bind(&event_type)
        .bind(&event_id)
        .bind(&payload)
        .bind(&metadata)
        .bind(&recorded_at)
        .execute(&mut *conn)
        .await;
        if let Err(e) = res {
            // Another transaction wrote one of these streams after we read its version: name
            // the stream from the violation's detail, "Key (stream, version)=(S, V) already exists."
            if let sqlx::Error::Database(d) = &e {
                if d.code().as_deref() == Some("23505") {
                    let detail = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|p| p.detail());
                    let stream = detail
                        .and_then(|d| d.split_once("=(")?.1.rsplit_once(", ").map(|(s, _)| s.to_string()))
                        .unwrap_or_else(|| "(written concurrently)".into());
                    let expected = appends.iter().find(|a| a.stream == stream).map(|a| a.expected);
                    return Err(StoreError::Conflict {
                        actual: current.get(&stream).copied().unwrap_or(0),
                        stream,
                        expected: expected.unwrap_or(crate::ExpectedVersion::Any),
                    });
                }
            }
            return Err(e.into());
        }
    }
    Ok(outcomes)
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

pub(crate) async fn execute(conn: &mut PgConnection, sql: &str, params: &[Value]) -> Result<u64> {
    Ok(bind(sqlx::query(sql), params).execute(conn).await?.rows_affected())
}

pub(crate) async fn fetch_as<T: crate::FromRow>(
    conn: &mut PgConnection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<T>> {
    let rows = bind(sqlx::query(sql), params).fetch_all(conn).await?;
    Ok(rows
        .iter()
        .map(|r| <T as sqlx::FromRow<sqlx::postgres::PgRow>>::from_row(r))
        .collect::<std::result::Result<_, _>>()?)
}

pub(crate) async fn fetch(conn: &mut PgConnection, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
    let rows = bind(sqlx::query(sql), params).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            r.columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if r.try_get_raw(i)?.is_null() {
                        return Ok(Value::Null);
                    }
                    Ok(match c.type_info().name() {
                        "INT8" => Value::Int(r.try_get(i)?),
                        "INT4" => Value::Int(i64::from(r.try_get::<i32, _>(i)?)),
                        "INT2" => Value::Int(i64::from(r.try_get::<i16, _>(i)?)),
                        "BOOL" => Value::Int(i64::from(r.try_get::<bool, _>(i)?)),
                        "BYTEA" => Value::Bytes(r.try_get(i)?),
                        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(r.try_get(i)?),
                        other => {
                            return Err(StoreError::Invalid(format!(
                                "column {} has type {other}; cast it to BIGINT or TEXT",
                                c.name()
                            )));
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Row)
        })
        .collect()
}

/// A stream's events after `after_version`, read on `conn` (the pool, or a transaction's own
/// connection so that a transaction never waits on the pool for a read).
pub(crate) async fn read_stream_on<'e, E>(conn: E, stream: &str, after_version: u64) -> Result<Vec<RecordedEvent>>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let rows = sqlx::query(
        "SELECT position, transaction_id::text AS transaction_id_text, stream, version, event_type, event_id,
                payload, metadata, recorded_at
         FROM events WHERE stream = $1 AND version > $2 ORDER BY version",
    )
    .bind(stream)
    .bind(after_version as i64)
    .fetch_all(conn)
    .await?;
    rows.iter().map(decode_event).collect()
}
