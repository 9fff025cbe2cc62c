//! `autodebit bench …`: measured throughput, printed as JSON.
use anyhow::Context;
use autodebit_eventstore::{BackendKind, EventStore, ExpectedVersion, NewEvent, StoreOptions, StreamAppend, testing};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::ProgressBar;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Event-store appends: batched, one event per command, and the bare database's ceiling.
    Append(AppendArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    #[arg(long, value_enum)]
    backend: Backend,
    /// PostgreSQL server to create a fresh benchmark database on (default: the local one).
    #[arg(long)]
    database_url: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Events written by the batched run (and by the raw run).
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Events per batch (one transaction).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Batches in flight at once, in the batched run and in the raw run alike.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Commands in the one-event-per-command run.
    #[arg(long, default_value_t = 50_000)]
    commands: usize,
    /// Concurrent writers in the one-event-per-command run.
    #[arg(long, default_value_t = 64)]
    writers: usize,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Append(a) => append(a).await,
    }
}

const PAYLOAD: usize = 256;
/// Streams per batch: each batch writes `batch / STREAMS_PER_BATCH` events to each.
const STREAMS_PER_BATCH: usize = 10;

fn event(i: usize) -> NewEvent {
    let mut payload = vec![0u8; PAYLOAD];
    payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "BenchEvent".into(),
        payload,
        metadata: vec![7u8; 32],
        recorded_at_ms: 0,
    }
}

fn batches(events: usize, batch: usize, prefix: &str) -> Vec<Vec<StreamAppend>> {
    let per_stream = (batch / STREAMS_PER_BATCH).max(1);
    let mut out = Vec::new();
    let mut i = 0;
    let mut s = 0;
    while i < events {
        let mut b = Vec::new();
        let mut n = 0;
        while n < batch && i < events {
            let k = per_stream.min(events - i).min(batch - n);
            b.push(StreamAppend {
                stream: format!("{prefix}-{s}"),
                expected: ExpectedVersion::NoStream,
                events: (i..i + k).map(event).collect(),
            });
            s += 1;
            i += k;
            n += k;
        }
        out.push(b);
    }
    out
}

#[derive(serde::Serialize)]
struct AppendReport {
    backend: &'static str,
    events: usize,
    batch: usize,
    concurrency: usize,
    payload_bytes: usize,
    commands: usize,
    writers: usize,
    events_per_second: f64,
    commands_per_second: f64,
    raw_rows_per_second: f64,
    ratio: f64,
}

async fn append(a: AppendArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url = match a.backend {
        Backend::Sqlite => testing::sqlite_url(tmp.path()),
        Backend::Postgres => match &a.database_url {
            // A database of its own beside the one named, so runs never mix.
            Some(u) => testing::fresh_postgres_database(u).await,
            None => testing::fresh_postgres_url().await,
        },
    };
    let store = EventStore::open(StoreOptions::new(&url)).await?;
    let progress = ProgressBar::new((a.events * 2 + a.commands) as u64);

    // Raw ceiling first, on a cold table like the store's.
    let raw = raw::prepare(&store).await?;
    let raw = std::sync::Arc::new(raw);
    let raw_rps = timed_batches(batches(a.events, a.batch, "raw"), a.concurrency, &progress, move |b| {
        let raw = raw.clone();
        async move { raw::insert(&raw, &b).await }
    })
    .await?;
    let writer = store.clone();
    let eps = timed_batches(batches(a.events, a.batch, "bench"), a.concurrency, &progress, move |b| {
        let store = writer.clone();
        async move {
            store.append_many(&b).await?;
            anyhow::Ok(())
        }
    })
    .await?;

    let t = Instant::now();
    let per_writer = a.commands.div_ceil(a.writers.max(1));
    let mut tasks = Vec::new();
    for w in 0..a.writers.max(1) {
        let (store, progress) = (store.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let expected = if i == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(i as u64) };
                store.append(&format!("cmd-{w}"), expected, vec![event(i)]).await?;
                progress.inc(1);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let cps = (per_writer * a.writers.max(1)) as f64 / t.elapsed().as_secs_f64();
    progress.finish_and_clear();

    let report = AppendReport {
        backend: match store.kind() {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        },
        events: a.events,
        batch: a.batch,
        concurrency: a.concurrency.max(1),
        payload_bytes: PAYLOAD,
        commands: per_writer * a.writers.max(1),
        writers: a.writers.max(1),
        events_per_second: eps.round(),
        commands_per_second: cps.round(),
        raw_rows_per_second: raw_rps.round(),
        ratio: (eps / raw_rps * 1000.0).round() / 1000.0,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Runs `write` over `batches` with `concurrency` in flight; returns events per second.
async fn timed_batches<F, Fut>(
    batches: Vec<Vec<StreamAppend>>,
    concurrency: usize,
    progress: &ProgressBar,
    write: F,
) -> anyhow::Result<f64>
where
    F: Fn(Vec<StreamAppend>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use futures::StreamExt;
    let total: usize = batches.iter().flatten().map(|s| s.events.len()).sum();
    let t = Instant::now();
    let mut runs = futures::stream::iter(batches.into_iter().map(|b| {
        let n = b.iter().map(|s| s.events.len() as u64).sum::<u64>();
        let fut = tokio::spawn(write(b));
        async move { fut.await.map_err(anyhow::Error::from)?.map(|_| n) }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some(n) = runs.next().await {
        progress.inc(n?);
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// The bare database: the same rows, a plain multi-row INSERT, no version checks or indexes
/// beyond the primary key.
mod raw {
    use super::*;

    pub enum Raw {
        Sqlite(sqlx::SqlitePool),
        Postgres(sqlx::PgPool),
    }

    pub async fn prepare(store: &EventStore) -> anyhow::Result<Raw> {
        if let Some(pool) = store.pg_pool() {
            sqlx::raw_sql(
                "CREATE TABLE bench_raw (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream TEXT NOT NULL,
                 version BIGINT NOT NULL, event_type TEXT NOT NULL, event_id UUID NOT NULL, payload BYTEA NOT NULL,
                 metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL)",
            )
            .execute(&pool)
            .await?;
            return Ok(Raw::Postgres(pool));
        }
        let pool = store.sqlite_writer().context("no database")?;
        sqlx::raw_sql(
            "CREATE TABLE bench_raw (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL,
             event_type TEXT NOT NULL, event_id BLOB NOT NULL, payload BLOB NOT NULL, metadata BLOB NOT NULL,
             recorded_at INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Raw::Sqlite(pool))
    }

    pub async fn insert(raw: &Raw, batch: &[StreamAppend]) -> anyhow::Result<()> {
        let rows: Vec<(&str, i64, &NewEvent)> = batch
            .iter()
            .flat_map(|s| s.events.iter().enumerate().map(move |(i, e)| (s.stream.as_str(), i as i64 + 1, e)))
            .collect();
        match raw {
            Raw::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(1000) {
                    let mut sql = String::from(
                        "INSERT INTO bench_raw (stream, version, event_type, event_id, payload, metadata, recorded_at) VALUES ",
                    );
                    sql.push_str(&vec!["(?,?,?,?,?,?,?)"; chunk.len()].join(","));
                    let mut q = sqlx::query(&sql);
                    for (s, v, e) in chunk {
                        q = q
                            .bind(*s)
                            .bind(*v)
                            .bind(e.event_type.as_str())
                            .bind(e.event_id.as_bytes().as_slice())
                            .bind(e.payload.as_slice())
                            .bind(e.metadata.as_slice())
                            .bind(e.recorded_at_ms);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let stream: Vec<&str> = rows.iter().map(|r| r.0).collect();
                let version: Vec<i64> = rows.iter().map(|r| r.1).collect();
                let event_type: Vec<&str> = rows.iter().map(|r| r.2.event_type.as_str()).collect();
                let event_id: Vec<uuid::Uuid> = rows.iter().map(|r| r.2.event_id).collect();
                let payload: Vec<&[u8]> = rows.iter().map(|r| r.2.payload.as_slice()).collect();
                let metadata: Vec<&[u8]> = rows.iter().map(|r| r.2.metadata.as_slice()).collect();
                let recorded_at: Vec<i64> = rows.iter().map(|r| r.2.recorded_at_ms).collect();
                sqlx::query(
                    "INSERT INTO bench_raw (stream, version, event_type, event_id, payload, metadata, recorded_at)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::uuid[], $5::bytea[], $6::bytea[], $7::bigint[])",
                )
                .bind(&stream)
                .bind(&version)
                .bind(&event_type)
                .bind(&event_id)
                .bind(&payload)
                .bind(&metadata)
                .bind(&recorded_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}
