//! `autodebit log export` and `autodebit log import`: the event log in a portable form, so a
//! log written by one version of the platform (or on one backend) can be read into another.
//!
//! The export is JSON lines. The first line says what follows and where the test clock stood
//! (`{"autodebit_log": 1, "test_clock_ms": …}`, null for a platform on the system clock); every
//! other line is one event, in log order: `stream`, `version`, `event_type`, `event_id`,
//! `recorded_at_ms`, and `payload` and `metadata` as Base64 of their protobuf bytes. The import
//! appends the events to an empty database in that order, each at its version, in
//! transactions of at most 500 events, and sets the test clock where the export had one.
use anyhow::{Context, bail};
use autodebit_eventstore::{Checkpoint, EventStore, ExpectedVersion, NewEvent, StoreOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The format's version, the first line's `autodebit_log`.
const FORMAT: u64 = 1;

#[derive(clap::Subcommand)]
pub enum LogCommand {
    /// Writes every event of the log, in log order, as JSON lines.
    Export {
        #[arg(long, env = "AUTODEBIT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Appends an exported log to a database that holds no events yet.
    Import {
        #[arg(long, env = "AUTODEBIT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// What to read (default: standard input).
        #[arg(long = "in")]
        input: Option<PathBuf>,
    },
}

/// The first line of an export.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    autodebit_log: u64,
    test_clock_ms: Option<i64>,
}

/// One event of an export.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub event_id: String,
    pub recorded_at_ms: i64,
    /// Base64 of the `Event` message.
    pub payload: String,
    /// Base64 of the `Metadata` message.
    pub metadata: String,
}

pub async fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Export { database_url, out } => {
            let store = EventStore::open(StoreOptions::new(database_url.as_str())).await?;
            let mut sink: Box<dyn Write> = match out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            export(&store, &mut sink).await?;
            sink.flush()?;
            Ok(())
        }
        LogCommand::Import { database_url, input } => {
            let store = EventStore::open(StoreOptions::new(database_url.as_str())).await?;
            let source: Box<dyn BufRead> = match input {
                Some(path) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
            };
            let n = import(&store, source).await?;
            eprintln!("imported {n} events");
            Ok(())
        }
    }
}

/// Writes the log in `store` to `sink`; returns how many events.
pub async fn export(store: &EventStore, sink: &mut dyn Write) -> anyhow::Result<u64> {
    let header =
        Header { autodebit_log: FORMAT, test_clock_ms: autodebit_runtime::clock::stored_test_clock(store).await? };
    writeln!(sink, "{}", serde_json::to_string(&header)?)?;
    let (mut after, mut n) = (Checkpoint::default(), 0u64);
    loop {
        let page = store.read_all(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.checkpoint();
        for e in page {
            let line = Line {
                stream: e.stream,
                version: e.version,
                event_type: e.event_type,
                event_id: e.event_id.to_string(),
                recorded_at_ms: e.recorded_at_ms,
                payload: B64.encode(&e.payload),
                metadata: B64.encode(&e.metadata),
            };
            writeln!(sink, "{}", serde_json::to_string(&line)?)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Appends the export read from `source` to `store`, which must hold no events; returns how
/// many events.
pub async fn import(store: &EventStore, source: impl BufRead) -> anyhow::Result<u64> {
    let held = store.count().await?;
    if held > 0 {
        bail!("the database already holds {held} events; a log is imported into an empty one");
    }
    let mut lines = source.lines();
    let first = lines.next().context("the export is empty")??;
    let header: Header = serde_json::from_str(&first).context("line 1: not the header of an autodebit log export")?;
    if header.autodebit_log != FORMAT {
        bail!("line 1: format {} (this version reads {FORMAT})", header.autodebit_log);
    }
    let (mut tx, mut in_tx, mut n) = (store.begin().await?, 0, 0u64);
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = i + 2;
        let e: Line = serde_json::from_str(&line).with_context(|| format!("line {at}"))?;
        let expected = if e.version <= 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(e.version - 1) };
        let event = NewEvent {
            event_id: e.event_id.parse().with_context(|| format!("line {at}: event_id"))?,
            event_type: e.event_type,
            payload: B64.decode(&e.payload).with_context(|| format!("line {at}: payload"))?,
            metadata: B64.decode(&e.metadata).with_context(|| format!("line {at}: metadata"))?,
            recorded_at_ms: e.recorded_at_ms,
        };
        tx.append(&e.stream, expected, vec![event]).await.with_context(|| format!("line {at}: {}", e.stream))?;
        (in_tx, n) = (in_tx + 1, n + 1);
        if in_tx == 500 {
            tx.commit().await?;
            (tx, in_tx) = (store.begin().await?, 0);
        }
    }
    tx.commit().await?;
    // The contracts service keeps lookup tables (merchants and their keys, plans, contracts)
    // and the notifier its merchants' settings, templates and webhook endpoints, that their
    // commands write beside their events; followers rebuild theirs from the log when they
    // start, these are written here.
    autodebit_contracts::rebuild_tables(store).await?;
    autodebit_notifier::rebuild_tables(store).await?;
    if let Some(ms) = header.test_clock_ms {
        autodebit_runtime::clock::set_test_clock(store, ms).await?;
    }
    Ok(n)
}
