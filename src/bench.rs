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
    /// The scheduler's due loop: N monthly contracts all due at once, issued under the limits.
    BillingRun(BillingRunArgs),
    /// Charges end to end through the all-in-one process: N monthly contracts signed over gRPC,
    /// the test clock moved a month, every charge noticed, issued, sent to the simulator and
    /// settled.
    Charges(ChargesArgs),
    /// The notifier from the log onward: N `ChargeSucceeded` events appended to the log, each a
    /// notice sent to an in-process WeChat fake and a webhook to an in-process receiver.
    Notices(NoticesArgs),
    /// The analytics projections rebuilt from a log of N events (signing sessions, contracts,
    /// charges and notices), beside the rate the same events were appended at.
    Rebuild(RebuildArgs),
    /// Reconciliation: a statement of N lines, as WeChat Pay's `downloadbill` gives it, read
    /// from a file and matched against N succeeded charges of the day, beside the rate the
    /// statement reader alone parses the same file at.
    Reconcile(ReconcileArgs),
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// PostgreSQL server to create a fresh benchmark database on (default: the local one).
    #[arg(long)]
    database_url: Option<String>,
    /// Lines of the statement (each one of the day's succeeded charges).
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// PostgreSQL server to create a fresh benchmark database on (default: the local one).
    #[arg(long)]
    database_url: Option<String>,
    /// Events in the log (ten per contract).
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct NoticesArgs {
    /// Notices (and webhook deliveries) to make.
    #[arg(long, default_value_t = 20_000)]
    notices: usize,
    /// Fail when they have not all gone out this many seconds after the first append.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct BillingRunArgs {
    #[arg(long, value_enum)]
    backend: Backend,
    /// PostgreSQL server to create a fresh benchmark database on (default: the local one).
    #[arg(long)]
    database_url: Option<String>,
    /// Active monthly contracts, all due at once.
    #[arg(long, default_value_t = 100_000)]
    contracts: usize,
    /// Due loops running at once (PostgreSQL shares the work with SKIP LOCKED; SQLite has one
    /// writer, so more loops only queue).
    #[arg(long)]
    loops: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ChargesArgs {
    /// Monthly contracts signed over gRPC (not timed): one charge each once the clock moves.
    #[arg(long, default_value_t = 20_000)]
    contracts: usize,
    /// Database backend; default: PostgreSQL when `--database-url` is given, else SQLite in a
    /// temporary directory.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// PostgreSQL server to create a fresh benchmark database on (default: the local one).
    #[arg(long)]
    database_url: Option<String>,
    /// Provider calls in flight at once: the charger's limit and the one merchant's.
    #[arg(long, default_value_t = 8_192)]
    concurrency: usize,
    /// Contracts signed at once over gRPC while setting up (default 64).
    #[arg(long)]
    signers: Option<usize>,
    /// Leave these services out (diagnosis: what the notifier's and analytics' followers cost
    /// the charges). Contracts, scheduler and charger are always run.
    #[arg(long, value_enum, value_delimiter = ',')]
    without: Vec<crate::platform::Service>,
    /// Fail when the charges have not all settled this many seconds after the clock moved.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Every second, one line on stderr: how far each stage of the pipeline has got.
    #[arg(long)]
    trace: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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
        BenchCommand::BillingRun(a) => billing_run(a).await,
        BenchCommand::Charges(a) => charges::run(a).await,
        BenchCommand::Notices(a) => notices::run(a).await,
        BenchCommand::Rebuild(a) => rebuild(a).await,
        BenchCommand::Reconcile(a) => reconcile(a).await,
    }
}

#[derive(serde::Serialize)]
struct ReconcileReport {
    backend: &'static str,
    lines: usize,
    statement_bytes: u64,
    matched: u64,
    discrepancies: usize,
    /// The statement read, matched against the day's charges, and its report written.
    seconds: f64,
    lines_per_second: f64,
    /// The same file through the statement reader alone (parse, check the summary).
    parse_lines_per_second: f64,
    ratio_to_parse: f64,
    /// The process's peak resident set, seeding and all.
    peak_rss_bytes: u64,
    /// The process's resident set as the reconciliation began, and its peak during it.
    rss_before_reconcile_bytes: u64,
    reconcile_peak_rss_bytes: u64,
}

/// `bench reconcile`: N succeeded charges of one day put straight into the books
/// (`settlement_items`, as the settlement follower writes them), their statement written to a
/// file, then the file parsed alone (timed: the baseline) and reconciled (timed).
async fn reconcile(a: ReconcileArgs) -> anyhow::Result<()> {
    use autodebit_domain::statement::{Entry, Reader, Writer};
    use autodebit_eventstore::Value;
    let tmp = tempfile::tempdir()?;
    let (store, platform) = bench_platform(a.backend, a.database_url.as_deref(), tmp.path()).await?;
    let shutdown = platform.shutdown.clone();
    store.migrate(&autodebit_charger::MIGRATIONS).await.context("charger tables")?;
    let merchant = "mch_bench";
    let now = platform.clock.now_ms();
    let date = autodebit_charger::settlement::local_date(now);
    let (day_start, _) = autodebit_charger::reconcile::day_bounds(date);
    let charge = |i: usize| {
        autodebit_domain::ChargeId::for_period(
            autodebit_domain::ContractId::parse(&format!("ct_{:032x}", i + 1)).expect("an id"),
            1,
        )
    };
    let fen = |i: usize| 990 + (i % 50) as i64 * 100;
    let progress = ProgressBar::new(a.lines as u64 * 2);
    for chunk in (0..a.lines).collect::<Vec<_>>().chunks(10_000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                let c = charge(*i);
                serde_json::json!([c.to_string(), fen(*i), day_start + (*i as i64 % 86_000_000), c.out_trade_no(1)])
            })
            .collect();
        let rows_sql = store.kind().json_rows(1);
        let mut tx = store.begin().await?;
        tx.execute(
            &format!(
                "INSERT INTO settlement_items (item_id, kind, charge_id, merchant_id, currency, amount, succeeded_at_ms,
                     due_date, batch_id, out_trade_no)
                 SELECT value->>0, 'charge', value->>0, '{merchant}', 'CNY', CAST(value->>1 AS BIGINT),
                        CAST(value->>2 AS BIGINT), '{date}', NULL, value->>3
                 FROM {rows_sql} WHERE true"
            ),
            &[Value::from(serde_json::Value::Array(rows).to_string())],
        )
        .await?;
        tx.commit().await?;
        progress.inc(chunk.len() as u64);
    }
    let path = tmp.path().join("statement.csv");
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut w = Writer::new(file, merchant)?;
        for i in 0..a.lines {
            let c = charge(i);
            w.entry(&Entry {
                time: format!("{date} 10:00:00"),
                transaction_id: format!("4200{i:016}"),
                out_trade_no: c.out_trade_no(1),
                amount: fen(i),
                fee: fen(i) * 6,
                currency: "CNY".into(),
                body: "bench".into(),
                ..Entry::default()
            })?;
        }
        use std::io::Write;
        w.finish()?.flush()?;
    }
    let statement_bytes = std::fs::metadata(&path)?.len();
    let open = || anyhow::Ok(std::io::BufReader::new(std::fs::File::open(&path)?));

    // Baseline: the reader alone.
    let t = Instant::now();
    let mut reader = Reader::new(open()?, merchant)?;
    let mut parsed = 0usize;
    while reader.next_line()?.is_some() {
        parsed += 1;
    }
    let parse_rate = parsed as f64 / t.elapsed().as_secs_f64();

    let calendar = autodebit_domain::calendar::WorkingCalendar::china();
    let peak_before = peak_rss_bytes();
    // The peak from here on: Linux resets it on `5` written to clear_refs.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = rss_bytes();
    let t = Instant::now();
    let done =
        autodebit_charger::reconcile::reconcile(&platform, &calendar, merchant, merchant, date, "bench", open()?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = t.elapsed().as_secs_f64();
    progress.finish_and_clear();
    shutdown.trigger();
    anyhow::ensure!(done.report.matched as usize == a.lines, "matched {} of {} lines", done.report.matched, a.lines);
    let rate = a.lines as f64 / seconds;
    let report = ReconcileReport {
        backend: match store.kind() {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        },
        lines: a.lines,
        statement_bytes,
        matched: done.report.matched,
        discrepancies: done.discrepancies.len(),
        seconds: (seconds * 1000.0).round() / 1000.0,
        lines_per_second: rate.round(),
        parse_lines_per_second: parse_rate.round(),
        ratio_to_parse: (rate / parse_rate * 1000.0).round() / 1000.0,
        reconcile_peak_rss_bytes: peak_rss_bytes(),
        peak_rss_bytes: peak_rss_bytes().max(peak_before),
        rss_before_reconcile_bytes: rss_before,
    };
    print_report(&report, a.json)
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
    let url = bench_database(a.backend, a.database_url.as_deref(), tmp.path()).await;
    let store = EventStore::open(StoreOptions::new(&url)).await?;
    let progress = ProgressBar::new((a.events * 2 + a.commands) as u64);

    // Raw ceiling first, on a cold table like the store's.
    store.create_ceiling_table().await?;
    let raw = store.clone();
    let raw_rps = timed_batches(batches(a.events, a.batch, "raw"), a.concurrency, &progress, move |b| {
        let raw = raw.clone();
        async move { Ok(raw.insert_ceiling_rows(&b).await?) }
    })
    .await?;
    let eps = timed_appends(&store, batches(a.events, a.batch, "bench"), a.concurrency, &progress).await?;

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
    print_report(&report, a.json)
}

/// Runs `write` over `batches` with `concurrency` in flight; returns events per second.
/// `batches` appended to `store`, `concurrency` at a time: events a second.
async fn timed_appends(
    store: &EventStore,
    batches: Vec<Vec<StreamAppend>>,
    concurrency: usize,
    progress: &ProgressBar,
) -> anyhow::Result<f64> {
    let store = store.clone();
    timed_batches(batches, concurrency, progress, move |b| {
        let store = store.clone();
        async move {
            store.append_many(&b).await?;
            anyhow::Ok(())
        }
    })
    .await
}

/// `n` bench events in batches of 1,000, each event a new stream of its own (as each charge
/// is): the store's ceiling for a benchmark that makes one new stream per event.
fn one_event_streams(n: usize) -> Vec<Vec<StreamAppend>> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|c| {
            c.iter()
                .map(|i| StreamAppend {
                    stream: format!("ceiling-{i}"),
                    expected: ExpectedVersion::NoStream,
                    events: vec![event(*i)],
                })
                .collect()
        })
        .collect()
}

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

#[derive(serde::Serialize)]
struct BillingRunReport {
    backend: &'static str,
    contracts: usize,
    loops: usize,
    /// Claim the timer, check the limits, append `ChargeScheduled`, move the schedule on,
    /// commit: issued charges per second.
    charges_issued_per_second: f64,
    /// Due timers found per second by the due loop's index scan.
    due_scan_per_second: f64,
    /// The process's peak resident set up to the end of the billing run.
    peak_rss_bytes: u64,
    /// The same number of events appended in batches of the due loop's size with nothing
    /// else done: the store's raw ceiling in this run.
    append_events_per_second: f64,
    ratio_to_append: f64,
}

/// A fresh benchmark database of `backend` and a platform on it with a test clock.
async fn bench_platform(
    backend: Backend,
    database_url: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<(EventStore, autodebit_runtime::Platform)> {
    let url = bench_database(backend, database_url, dir).await;
    let store = EventStore::open(StoreOptions::new(&url)).await?;
    let shutdown = autodebit_runtime::Shutdown::new();
    let clock = autodebit_runtime::PlatformClock::test(&store, &shutdown).await?;
    let platform = autodebit_runtime::Platform { store: store.clone(), clock, shutdown };
    Ok((store, platform))
}

/// The process's peak resident set, from /proc (0 where there is none).
fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM:")
}

/// The process's resident set now.
fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

/// A size line of /proc/self/status (`VmHWM:`, `VmRSS:`), in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

async fn billing_run(a: BillingRunArgs) -> anyhow::Result<()> {
    use autodebit_eventstore::Value;
    let tmp = tempfile::tempdir()?;
    let (store, platform) = bench_platform(a.backend, a.database_url.as_deref(), tmp.path()).await?;
    let shutdown = platform.shutdown.clone();
    store.migrate(&autodebit_scheduler::store::MIGRATIONS).await.context("scheduler tables")?;

    // N monthly schedules, signed a month ago, their notices given: every one is due now.
    let now = platform.clock.now_ms();
    let anchor = now - 31 * 86_400_000;
    let progress = ProgressBar::new(a.contracts as u64 * 2);
    for chunk in (0..a.contracts).collect::<Vec<_>>().chunks(5_000) {
        // One JSON parameter per chunk: SQLite binds many parameters in quadratic time, and
        // PostgreSQL takes the same JSON as well.
        // Time-ordered contract ids, as contracts get them: one signed each millisecond.
        let id = |i: usize| uuid::Uuid::from_u128(((anchor as u128 + i as u128) << 80) | (i as u128 + 1));
        let rows: Vec<String> = chunk.iter().map(|i| format!("[\"ct_{}\",\"payer-{i}\"]", id(*i))).collect();
        let (each, id, payer) = match store.kind() {
            BackendKind::Sqlite => ("json_each($1)", "json_extract(value, '$[0]')", "json_extract(value, '$[1]')"),
            BackendKind::Postgres => ("json_array_elements($1::json) AS e(value)", "value->>0", "value->>1"),
        };
        let mut tx = store.begin().await?;
        tx.execute(
            &format!(
                "INSERT INTO scheduler_schedules (contract_id, merchant_id, payer_id, amount, currency, cycle,
                   anchor_ms, cycle_anchor_ms, next_period, next_due_ms, noticed_period, wake_ms, active, notice_lead_ms)
                 SELECT {id}, 'mch_bench', {payer}, 1990, 'CNY', 'monthly', $2, $2, 1, $3, 1, $3, 1, $4 FROM {each}"
            ),
            &[
                Value::from(format!("[{}]", rows.join(","))),
                Value::Int(anchor),
                Value::Int(now - 1),
                Value::Int(autodebit_domain::plan::notice_lead(None).num_milliseconds()),
            ],
        )
        .await?;
        tx.commit().await?;
        progress.inc(chunk.len() as u64);
    }

    // How fast the due index yields due timers.
    let t = Instant::now();
    let found = store
        .query(
            "SELECT COUNT(*) FROM (SELECT contract_id FROM scheduler_schedules WHERE active = 1 AND wake_ms <= $1) d",
            &[Value::Int(now)],
        )
        .await?;
    let scanned = found.first().and_then(|r| r.i64(0)).unwrap_or(0);
    let due_scan = scanned as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(scanned as usize == a.contracts, "{scanned} due of {}", a.contracts);

    let loops = a.loops.unwrap_or(if a.backend == Backend::Postgres { 2 } else { 1 }).max(1);
    let window = autodebit_domain::window::DailyWindow::always();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (platform, progress) = (platform.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = autodebit_scheduler::due::issue_due(&platform, &window).await?;
                if n == 0 {
                    return anyhow::Ok(());
                }
                progress.inc(n as u64);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let issued_secs = t.elapsed().as_secs_f64();
    let issued = store.query("SELECT COUNT(*) FROM events WHERE event_type = 'ChargeScheduled'", &[]).await?;
    let issued = issued.first().and_then(|r| r.i64(0)).unwrap_or(0);
    anyhow::ensure!(issued as usize == a.contracts, "issued {issued} charges for {} due contracts", a.contracts);
    progress.finish_and_clear();
    // Read before the ceiling run below builds its own batches.
    let peak_rss = peak_rss_bytes();

    // The store's ceiling in the same run: the same events, in batches of the loop's size.
    // One new stream per event, as each charge is.
    let appended = timed_appends(&store, one_event_streams(a.contracts), loops, &ProgressBar::hidden()).await?;
    shutdown.trigger();

    let cps = a.contracts as f64 / issued_secs;
    let report = BillingRunReport {
        backend: match store.kind() {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        },
        contracts: a.contracts,
        loops,
        charges_issued_per_second: cps.round(),
        due_scan_per_second: due_scan.round(),
        peak_rss_bytes: peak_rss,
        append_events_per_second: appended.round(),
        ratio_to_append: (cps / appended * 1000.0).round() / 1000.0,
    };
    print_report(&report, a.json)
}

/// `bench rebuild`: N events of ten kinds, as a billing platform's log holds them, appended in
/// batches of 1,000 (timed: the store's own rate), then every analytics projection rebuilt from
/// them (timed). The live projections are taken to stand at the head of the log (their
/// checkpoint is set there), so the rebuild reads all of it.
async fn rebuild(a: RebuildArgs) -> anyhow::Result<()> {
    use autodebit_proto::EventKind as K;
    use autodebit_proto::events::v1 as pb;
    use autodebit_runtime::codec::{self, Cause};
    let tmp = tempfile::tempdir()?;
    let url = bench_database(a.backend, a.database_url.as_deref(), tmp.path()).await;
    let store = EventStore::open(StoreOptions::new(&url)).await?;
    let stores = autodebit_analytics::Stores::beside(store.clone(), &url).await?;

    // Ten events per contract: a session opened, viewed, ticked and confirmed, the contract
    // signed, a charge scheduled and succeeded, and three notices.
    let day = 86_400_000;
    let start = 1_767_225_600_000; // 2026-01-01
    let contract_events = |i: usize| -> Vec<StreamAppend> {
        let at = start + (i as i64 % 365) * day;
        let contract_id = autodebit_domain::ContractId::generate();
        let charge = autodebit_domain::ChargeId::for_period(contract_id, 1).to_string();
        let contract = contract_id.to_string();
        let (merchant, plan, payer) = (format!("m{}", i % 50), format!("plan{}", i % 200), format!("payer-{i}"));
        let session = format!("ss_{i}");
        let money = Some(pb::Money { minor_units: 1_990, currency: "CNY".into() });
        let step = |s: pb::SigningStep, detail: &str| {
            K::SigningStepRecorded(pb::SigningStepRecorded {
                session_id: session.clone(),
                step: s as i32,
                detail: detail.into(),
                at_ms: at,
                merchant_id: merchant.clone(),
                payer_id: payer.clone(),
                ..Default::default()
            })
        };
        let notice = |n: usize, kind: pb::NoticeKind| {
            K::NoticeRecorded(pb::NoticeRecorded {
                notice_id: format!("n{i}-{n}"),
                kind: kind as i32,
                contract_id: contract.clone(),
                charge_id: charge.clone(),
                recorded_at_ms: at,
                merchant_id: merchant.clone(),
                recipient: payer.clone(),
                text: "您的会员将于明日自动续费 ¥19.90".into(),
                ..Default::default()
            })
        };
        let streams: Vec<(String, Vec<K>)> = vec![
            (
                format!("signing-{session}"),
                vec![
                    K::SigningSessionOpened(pb::SigningSessionOpened {
                        session_id: session.clone(),
                        merchant_id: merchant.clone(),
                        plan_id: plan.clone(),
                        payer_id: payer.clone(),
                        channel: pb::SigningChannel::H5 as i32,
                        device_id: format!("d{i}"),
                        opened_at_ms: at,
                        ..Default::default()
                    }),
                    step(pb::SigningStep::PageViewed, ""),
                    step(pb::SigningStep::AgreementTicked, ""),
                    step(pb::SigningStep::Confirmed, &contract),
                ],
            ),
            (
                format!("contract-{contract}"),
                vec![K::ContractSigned(pb::ContractSigned {
                    contract_id: contract.clone(),
                    merchant_id: merchant.clone(),
                    payer_id: payer.clone(),
                    amount_per_cycle: money.clone(),
                    cycle: pb::Cycle::Monthly as i32,
                    signed_at_ms: at,
                    plan_id: plan.clone(),
                    ..Default::default()
                })],
            ),
            (
                format!("charge-{charge}"),
                vec![
                    K::ChargeScheduled(pb::ChargeScheduled {
                        charge_id: charge.clone(),
                        contract_id: contract.clone(),
                        merchant_id: merchant.clone(),
                        payer_id: payer.clone(),
                        amount: money.clone(),
                        period: 1,
                        due_at_ms: at,
                        reason: pb::ChargeReason::Cycle as i32,
                        ..Default::default()
                    }),
                    K::ChargeSucceeded(pb::ChargeSucceeded {
                        charge_id: charge.clone(),
                        contract_id: contract.clone(),
                        merchant_id: merchant.clone(),
                        amount: money.clone(),
                        succeeded_at_ms: at,
                        payer_id: payer.clone(),
                        ..Default::default()
                    }),
                ],
            ),
            (
                format!("notices-{i}"),
                vec![
                    notice(0, pb::NoticeKind::ContractSigned),
                    notice(1, pb::NoticeKind::PreDebit),
                    notice(2, pb::NoticeKind::ChargeSucceeded),
                ],
            ),
        ];
        streams
            .into_iter()
            .map(|(stream, kinds)| StreamAppend {
                stream,
                expected: ExpectedVersion::NoStream,
                events: kinds
                    .into_iter()
                    .map(|k| codec::encode(pb::Event { kind: Some(k) }, &Cause::request(format!("bench/{i}")), at))
                    .collect(),
            })
            .collect()
    };
    let contracts = a.events.div_ceil(10);
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut in_batch = 0;
    for i in 0..contracts {
        batch.extend(contract_events(i));
        in_batch += 10;
        if in_batch >= 1_000 {
            batches.push(std::mem::take(&mut batch));
            in_batch = 0;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let events = (contracts * 10) as u64;
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(events) };
    let appended = timed_appends(&store, batches, 1, &bar).await?;
    bar.finish_and_clear();

    // The live projections at the head of the log.
    let mut head = autodebit_eventstore::Checkpoint::default();
    loop {
        let page = store.read_all(head, 10_000).await?;
        let Some(last) = page.last() else { break };
        head = last.checkpoint();
    }
    let mut tx = stores.tables.begin().await?;
    tx.save_checkpoint("analytics.projections", Default::default(), head).await?;
    tx.commit().await?;

    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(events) };
    let t = Instant::now();
    let done = autodebit_analytics::rebuild::rebuild(&stores, None, &|n, total| {
        bar.set_length(total);
        bar.set_position(n);
    })
    .await?;
    let seconds = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    anyhow::ensure!(done.events == events, "the rebuild read {} events of {events}", done.events);
    let rate = events as f64 / seconds;

    #[derive(serde::Serialize)]
    struct RebuildReport {
        backend: &'static str,
        events: u64,
        seconds: f64,
        events_per_second: f64,
        /// The same events appended in batches of 1,000, one batch at a time, before.
        append_events_per_second: f64,
        /// events_per_second / append_events_per_second.
        ratio: f64,
        peak_rss_bytes: u64,
    }
    let report = RebuildReport {
        backend: if a.backend == Backend::Postgres { "postgres" } else { "sqlite" },
        events,
        seconds: (seconds * 1000.0).round() / 1000.0,
        events_per_second: rate.round(),
        append_events_per_second: appended.round(),
        ratio: (rate / appended * 1000.0).round() / 1000.0,
        peak_rss_bytes: peak_rss_bytes(),
    };
    print_report(&report, a.json)
}

/// A database of the run's own: a SQLite file in `dir`, or a fresh PostgreSQL database beside
/// the one named (so runs never mix).
async fn bench_database(backend: Backend, database_url: Option<&str>, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => testing::sqlite_url(dir),
        Backend::Postgres => match database_url {
            Some(u) => testing::fresh_postgres_database(u).await,
            None => testing::fresh_postgres_url().await,
        },
    }
}

/// One JSON object on stdout: one line with `--json`, indented otherwise.
fn print_report(report: &impl serde::Serialize, json: bool) -> anyhow::Result<()> {
    let text = if json { serde_json::to_string(report)? } else { serde_json::to_string_pretty(report)? };
    println!("{text}");
    Ok(())
}

/// `bench charges`: the charger end to end, through the services' own gRPC APIs.
mod charges {
    use super::{Backend, ChargesArgs, bench_database, peak_rss_bytes, print_report};
    use crate::demo::{authed, bar, count, log_head as head, onboard};
    use crate::platform::{self, ListenArgs, PlatformArgs, Service};
    use anyhow::{Context, bail};
    use autodebit_eventstore::{BackendKind, EventStore};
    use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
    use autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient;
    use autodebit_runtime::metrics;
    use futures::StreamExt;
    use std::time::{Duration, Instant};
    use tonic::transport::Channel;

    #[derive(serde::Serialize)]
    struct ChargesReport {
        backend: &'static str,
        contracts: usize,
        /// Provider calls in flight at once at most.
        concurrency: usize,
        /// Charges with an outcome per second, from the clock's move to the last outcome.
        charges_per_second: f64,
        /// Seconds from the clock's move to the last outcome.
        seconds: f64,
        /// Seconds from the clock's move to the first outcome.
        first_outcome_seconds: f64,
        /// Outcomes per second between the 10th and the 90th percent of them: the pipeline's
        /// pace with the start-up and the latency tail left out.
        middle_charges_per_second: f64,
        /// Each attempt's start (`ChargeAttemptStarted` written) to its outcome recorded, by
        /// the machine clock: the charger's settle-latency histogram.
        p50_ms: i64,
        p99_ms: i64,
        mean_ms: i64,
        succeeded: i64,
        failed: i64,
        /// The process's peak resident set up to the last outcome.
        peak_rss_bytes: u64,
        /// Setting up (not timed): contracts signed over gRPC, and their schedules made.
        signing_seconds: f64,
        /// Contracts signed a second over gRPC, schedules included (`contracts` ÷
        /// `signing_seconds`).
        signings_per_second: u64,
        /// The services run (all five unless `--without`).
        services: Vec<&'static str>,
        /// The analytics projector's lag behind the log while the charges ran, sampled every
        /// 20 ms by the machine clock (see [`LagSampler`]): its 99th percentile and maximum.
        /// Absent when analytics does not run.
        #[serde(skip_serializing_if = "Option::is_none")]
        analytics_lag_p99_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        analytics_lag_max_ms: Option<u64>,
    }

    /// Samples how far a follower is behind the log, in time: at each sample, how long ago the
    /// log first held an event past the follower's position (0 when it holds none). The
    /// follower's position is read from its gauge, then the log's head from the database; each
    /// head is taken to have been reached when its query began (so a lag is never understated
    /// by the query's own time). The sampler runs on a thread and runtime of its own, so that
    /// the platform's busy runtime neither delays its samples nor ages its timestamps.
    struct LagSampler {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: std::thread::JoinHandle<anyhow::Result<Vec<u64>>>,
    }

    impl LagSampler {
        fn start(store: EventStore, follower: &'static str) -> anyhow::Result<Self> {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name("lag sampler".into()).spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let mut heads: Vec<(Instant, i64)> = Vec::new();
                    let mut lags = Vec::new();
                    while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        let now = Instant::now();
                        let at = follower_positions().into_iter().find(|(n, _)| n == follower).map_or(0, |(_, p)| p);
                        let h = head(&store).await?;
                        if heads.last().is_none_or(|(_, last)| h > *last) {
                            heads.push((now, h));
                        }
                        lags.push(lag_at(&heads, at, now));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(lags)
                })
            })?;
            Ok(LagSampler { stop, thread })
        }

        /// Stops sampling: (p99, max) of the lags in ms.
        async fn finish(self) -> anyhow::Result<(u64, u64)> {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let thread = self.thread;
            let mut lags = tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the lag sampler panicked"))??;
            lags.sort_unstable();
            let p99 = lags.get((lags.len() * 99 / 100).min(lags.len().saturating_sub(1))).copied().unwrap_or(0);
            Ok((p99, lags.last().copied().unwrap_or(0)))
        }
    }

    /// The lag at `now` of a follower at position `at`, given when the log's head first reached
    /// each position (`heads`, ascending): the age of the first head past `at`.
    fn lag_at(heads: &[(Instant, i64)], at: i64, now: Instant) -> u64 {
        let first_past = heads.partition_point(|(_, h)| *h <= at);
        heads.get(first_past).map_or(0, |(t, _)| now.duration_since(*t).as_millis() as u64)
    }

    #[cfg(test)]
    #[test]
    fn lag_is_the_age_of_the_first_event_not_taken_in() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let heads = [(at(0), 10), (at(20), 15), (at(40), 30)];
        assert_eq!(lag_at(&heads, 30, at(60)), 0, "at the head");
        assert_eq!(lag_at(&heads, 40, at(60)), 0, "past the last sample");
        assert_eq!(lag_at(&heads, 15, at(60)), 20, "behind what came at 40 ms");
        assert_eq!(lag_at(&heads, 12, at(60)), 40, "behind what came at 20 ms");
        assert_eq!(lag_at(&heads, 0, at(60)), 60);
    }

    const SUCCEEDED: &str = metrics::CHARGES_SUCCEEDED;
    const FAILED: &str = metrics::CHARGES_FAILED;

    /// Outcomes the charger has committed, by its in-process counters (no database read): they
    /// move just after each outcome batch commits.
    fn settled() -> i64 {
        metrics::get(SUCCEEDED, &[]) + metrics::get(FAILED, &[])
    }

    pub async fn run(a: ChargesArgs) -> anyhow::Result<()> {
        let backend = a.backend.unwrap_or(if a.database_url.is_some() { Backend::Postgres } else { Backend::Sqlite });
        let tmp = tempfile::tempdir()?;
        let url = bench_database(backend, a.database_url.as_deref(), tmp.path()).await;
        let listen = ListenArgs { grpc_addr: "127.0.0.1:0".parse()?, http_addr: "127.0.0.1:0".parse()? };
        let operator_key = format!("op_{}", uuid::Uuid::new_v4().simple());
        let concurrency = a.concurrency.max(1);
        let options = PlatformArgs {
            // The driver keeps 64 calls in flight; none of them is to be shed.
            max_in_flight: 64,
            test_clock: true,
            simulator_seed: 1,
            // Every charge settles in one attempt: no retries a day later to wait for.
            decline_basis_points: 0,
            hard_decline_basis_points: 0,
            // 5% of deductions answered ambiguously, settled by query.
            transient_basis_points: 500,
            simulator_latency_ms: 300,
            simulator_latency_p99_ms: 1_500,
            charger_concurrency: concurrency,
            // One merchant: its limit is the charger's.
            merchant_concurrency: concurrency,
            wechatpay_config: None,
            provider_qps: 0,
            operator_key: Some(operator_key.clone()),
            public_url: None,
            signing_session_minutes: 10,
            charge_window: "00:00-24:00".into(),
            wechat_api_url: autodebit_notifier::WECHAT_API_URL.into(),
            tencent_sms_url: autodebit_notifier::TENCENT_SMS_URL.into(),
            webhook_key: None,
            allow_loopback_webhooks: true,
            db_pool: 16,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            holiday_calendar: None,
            settlement_closer: true,
            simulator_statements: false,
            statement_discrepancies: false,
            initial_credit_score: autodebit_domain::credit::DEFAULT_INITIAL,
            contracts: Default::default(),
        };
        let needed = [Service::Contracts, Service::Scheduler, Service::Charger];
        let services: Vec<Service> =
            Service::all().into_iter().filter(|s| needed.contains(s) || !a.without.contains(s)).collect();
        let running = platform::start(&url, &services, &listen, &options).await?;
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))?.connect().await?;
        let result = drive(&a, channel, &running.platform.store, &operator_key).await;
        running.stop().await?;
        let mut report = result?;
        report.services = services.iter().map(|s| s.name()).collect();
        print_report(&report, a.json)
    }

    async fn drive(
        a: &ChargesArgs,
        channel: Channel,
        store: &EventStore,
        operator_key: &str,
    ) -> anyhow::Result<ChargesReport> {
        let timeout = Duration::from_secs(a.timeout_secs);
        let setup = Instant::now();
        let (merchant_id, plan_id) = onboard(&channel, operator_key).await.context("onboarding the merchant")?;
        let contracts = ContractsServiceClient::new(channel.clone());
        let mut admin = AdminServiceClient::new(channel);

        let signers = a.signers.unwrap_or(64).max(1);
        let pb = bar(a.contracts as u64, "signing");
        let mut signed = futures::stream::iter(0..a.contracts)
            .map(|i| {
                let mut client = contracts.clone();
                // No idempotency key, so generated ids in signing order: under a key an import's id
                // leads with its signing time, one millisecond for all on a standing test clock.
                let import = autodebit_proto::contracts::v1::SignContractRequest {
                    idempotency_key: String::new(),
                    ..crate::demo::import_request(&merchant_id, &plan_id, "bench", i as i64, 1_990)
                };
                let request = authed(import, operator_key);
                async move { client.sign_contract(request?).await.map_err(anyhow::Error::from) }
            })
            .buffer_unordered(signers);
        while let Some(r) = signed.next().await {
            r.context("signing a contract")?;
            pb.inc(1);
        }
        drop(signed);
        pb.finish_and_clear();

        // Every contract has its schedule, and every follower has read the log to its end, before
        // time moves: the timed part starts from a quiet platform.
        let deadline = Instant::now() + timeout;
        loop {
            let schedules = count(store, "SELECT COUNT(*) FROM scheduler_schedules").await?;
            if schedules >= a.contracts as i64 && followers_caught_up(store).await? {
                break;
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for the schedules: {schedules} of {}", a.contracts);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let signing_seconds = setup.elapsed().as_secs_f64();
        let before = outcomes(store).await?;
        let counted_before = settled();

        // Timed: a month and a day pass at once; each contract's notice goes out, then its charge.
        let pb = bar(a.contracts as u64, "settled");
        let analytics = !a.without.contains(&Service::Analytics);
        let lag = match analytics {
            true => Some(LagSampler::start(store.clone(), "analytics.projections")?),
            false => None,
        };
        let started = Instant::now();
        admin
            .advance_clock(authed(AdvanceClockRequest { seconds: 32 * 86_400 }, operator_key)?)
            .await
            .context("advancing the clock")?;
        if a.trace {
            pb.suspend(|| eprintln!("the clock moved in {} ms", started.elapsed().as_millis()));
        }
        let target = counted_before + a.contracts as i64;
        let deadline = started + timeout;
        let mut next_trace = started;
        let mut last_seen = (0i64, started);
        // When the first outcome, 10% and 90% of them were seen.
        let marks = [1, (a.contracts / 10).max(1), (a.contracts * 9 / 10).max(1)];
        let mut seen: [Option<(i64, f64)>; 3] = [None; 3];
        loop {
            let n = settled();
            if n > last_seen.0 {
                last_seen = (n, Instant::now());
            }
            for (m, s) in marks.iter().zip(seen.iter_mut()) {
                if s.is_none() && n - counted_before >= *m as i64 {
                    *s = Some((n - counted_before, started.elapsed().as_secs_f64()));
                }
            }
            pb.set_position((n - counted_before).max(0) as u64);
            if n >= target {
                break;
            }
            if a.trace && Instant::now() >= next_trace {
                let line = stages(store, started).await?;
                pb.suspend(|| eprintln!("{line}"));
                next_trace = Instant::now() + Duration::from_secs(1);
            }
            if Instant::now() > deadline {
                let line = stages(store, started).await?;
                bail!(
                    "only {} of {} charges settled within {}s of the clock's move (the last outcome came after \
                     {:.1}s); {line}",
                    n - counted_before,
                    a.contracts,
                    a.timeout_secs,
                    last_seen.1.duration_since(started).as_secs_f64(),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_bytes = peak_rss_bytes();
        let lag = match lag {
            Some(l) => Some(l.finish().await?),
            None => None,
        };
        pb.finish_and_clear();
        if a.trace {
            eprintln!("{}", stages(store, started).await?);
            // What each follower's batches took, read and write, over the whole run.
            for (name, _) in follower_positions() {
                let q = |stage: &str, per_mille| {
                    metrics::quantile_ms(
                        metrics::FOLLOWER_BATCH_MS,
                        &[("follower", &name), ("stage", stage)],
                        per_mille,
                    )
                    .unwrap_or(0)
                };
                eprintln!(
                    "{name}: batch read p50 {} ms p99 {} ms max {} ms, write p50 {} ms p99 {} ms max {} ms, batches {}",
                    q("read", 500),
                    q("read", 990),
                    q("read", 1000),
                    q("write", 500),
                    q("write", 990),
                    q("write", 1000),
                    metrics::get(
                        &format!("{}_count", metrics::FOLLOWER_BATCH_MS),
                        &[("follower", &name), ("stage", "write")]
                    )
                );
            }
        }

        // The log agrees with the counters. (Not polled: with no index by event type the count
        // scans the whole log, a reader busy for hundreds of milliseconds at these sizes.)
        let t = Instant::now();
        let recorded = outcomes(store).await? - before;
        if a.trace {
            eprintln!("counting outcomes in the log took {} ms", t.elapsed().as_millis());
        }
        anyhow::ensure!(
            recorded >= a.contracts as i64,
            "the charger counted {} outcomes but the log holds {recorded}",
            a.contracts
        );

        let latency = autodebit_charger::SETTLE_LATENCY;
        let observed = metrics::get(&format!("{latency}_count"), &[]).max(1);
        Ok(ChargesReport {
            backend: match store.kind() {
                BackendKind::Sqlite => "sqlite",
                BackendKind::Postgres => "postgres",
            },
            contracts: a.contracts,
            concurrency: a.concurrency.max(1),
            charges_per_second: (a.contracts as f64 / seconds).round(),
            seconds: (seconds * 1000.0).round() / 1000.0,
            first_outcome_seconds: seen[0].map_or(0.0, |(_, t)| (t * 1000.0).round() / 1000.0),
            middle_charges_per_second: match (seen[1], seen[2]) {
                (Some((n1, t1)), Some((n2, t2))) if t2 > t1 => ((n2 - n1) as f64 / (t2 - t1)).round(),
                _ => 0.0,
            },
            p50_ms: metrics::quantile_ms(latency, &[], 500).unwrap_or(0),
            p99_ms: metrics::quantile_ms(latency, &[], 990).unwrap_or(0),
            mean_ms: metrics::get(&format!("{latency}_sum"), &[]) / observed,
            succeeded: metrics::get(SUCCEEDED, &[]),
            failed: metrics::get(FAILED, &[]),
            peak_rss_bytes,
            signing_seconds: (signing_seconds * 10.0).round() / 10.0,
            signings_per_second: (a.contracts as f64 / signing_seconds.max(0.001)).round() as u64,
            services: Vec::new(),
            analytics_lag_p99_ms: lag.map(|l| l.0),
            analytics_lag_max_ms: lag.map(|l| l.1),
        })
    }

    /// Charge outcomes in the log (a scan of it: there is no index by event type).
    async fn outcomes(store: &EventStore) -> anyhow::Result<i64> {
        count(store, "SELECT COUNT(*) FROM events WHERE event_type IN ('ChargeSucceeded', 'ChargeFailed')").await
    }

    /// Each follower's position, by its own gauge, and the name it goes by.
    fn follower_positions() -> Vec<(String, i64)> {
        metrics::render()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("autodebit_follower_position{follower=\"")?;
                let (name, tail) = rest.split_once("\"}")?;
                Some((name.to_string(), tail.trim().parse().ok()?))
            })
            .collect()
    }

    async fn followers_caught_up(store: &EventStore) -> anyhow::Result<bool> {
        let head = head(store).await?;
        let positions = follower_positions();
        Ok(!positions.is_empty() && positions.iter().all(|(_, p)| *p >= head))
    }

    /// How far each stage has got: notices and charges issued (the scheduler's counters),
    /// attempts still open in `charger_attempts`, outcomes recorded, and how far behind the head
    /// of the log each follower is.
    async fn stages(store: &EventStore, since: Instant) -> anyhow::Result<String> {
        let head = head(store).await?;
        let open = count(store, "SELECT COUNT(*) FROM charger_attempts").await?;
        let lag: Vec<String> = follower_positions().iter().map(|(n, p)| format!("{n}={}", head - p)).collect();
        let errors = metrics::get(metrics::CHARGER_ERRORS, &[]) + metrics::get(metrics::SCHEDULER_ERRORS, &[]);
        Ok(format!(
            "t={:.1}s head={head} notices={} scheduled={} attempts_open={open} settled={} errors={errors} lag[{}]",
            since.elapsed().as_secs_f64(),
            metrics::get(metrics::PRE_DEBIT_NOTICES, &[]),
            metrics::get(metrics::CHARGES_SCHEDULED, &[]),
            settled(),
            lag.join(" "),
        ))
    }
}

/// `bench notices`: the notifier from the log onward.
///
/// The platform runs in-process with the contracts service (to onboard the merchant) and the
/// notifier, on a fresh SQLite file. The merchant's official-account channel points at the WeChat
/// fake (`autodebit-mock-channels`, in-process) and one webhook endpoint at an in-process
/// receiver. Timed: N synthetic `ChargeSucceeded` events appended straight to the log in batches
/// of 1,000, each the notifier's follower turns into a notice (rendered, recorded on the log and
/// queued) and a `charge.succeeded` delivery, which the two senders send and record — until every
/// notice is `done` in `notifier_outbox` and every delivery `succeeded`.
mod notices {
    use super::{NoticesArgs, one_event_streams, peak_rss_bytes, print_report, timed_appends};
    use crate::demo::count;
    use crate::demo::{authed, onboard_with_key, rand_digits};
    use crate::platform::{self, ListenArgs, PlatformArgs, Service};
    use anyhow::{Context, bail};
    use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend, testing};
    use autodebit_mock_channels::wechat::{AppKind, WechatMock};
    use autodebit_proto::events::v1 as pb;
    use autodebit_proto::notifier::v1::{
        CreateWebhookEndpointRequest, SetNotifierSettingsRequest, notifier_service_client::NotifierServiceClient,
        webhooks_service_client::WebhooksServiceClient,
    };
    use autodebit_runtime::codec::{self, Cause};
    use indicatif::ProgressBar;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    use tonic::transport::Channel;

    const APP_ID: &str = "wxbench000000001";
    const TEMPLATE: &str = "TPL_CHARGE_SUCCEEDED";

    #[derive(serde::Serialize)]
    struct NoticesReport {
        backend: &'static str,
        notices: usize,
        /// Notices sent (outbox row `done`, WeChat fake answered) per second, from the first
        /// event appended to the last notice recorded.
        notices_per_second: f64,
        /// Webhook deliveries `succeeded` per second, same start.
        webhook_deliveries_per_second: f64,
        /// Seconds from the first append until both were all done.
        seconds: f64,
        /// Each notice's causing event (`occurred_at_ms`) to its delivery recorded
        /// (`notifier_deliveries.at_ms`, the time its sender's pass began), from the rows.
        p50_ms: i64,
        p99_ms: i64,
        /// Each webhook's event time (the payload's `timestamp`) to the start of its successful
        /// send (`next_at_ms` of a succeeded row).
        webhook_p99_ms: i64,
        /// Template messages the fake accepted and webhooks the receiver took.
        wechat_messages: usize,
        webhooks_received: u64,
        peak_rss_bytes: u64,
        /// The same number of events appended with nothing else done (batches of 1,000, one
        /// new stream each), in the same run after the timed part: the store's ceiling.
        append_events_per_second: f64,
        /// notices_per_second / append_events_per_second.
        ratio_to_append: f64,
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    async fn serve(router: axum::Router) -> anyhow::Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(addr)
    }

    pub async fn run(a: NoticesArgs) -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let url = testing::sqlite_url(tmp.path());

        // The receivers.
        let wechat = WechatMock::new(Arc::new(now_ms));
        wechat.register_app(APP_ID, "bench-app-secret", AppKind::OfficialAccount);
        wechat.add_template(APP_ID, TEMPLATE, &["thing1", "amount2"]);
        let wechat_addr = serve(autodebit_mock_channels::wechat::router(wechat.clone())).await?;
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let hooks_addr = serve(axum::Router::new().route(
            "/hooks",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        ))
        .await?;
        let secret_file = tmp.path().join("oa-secret");
        std::fs::write(&secret_file, "bench-app-secret")?;

        let listen = ListenArgs { grpc_addr: "127.0.0.1:0".parse()?, http_addr: "127.0.0.1:0".parse()? };
        let operator_key = format!("op_{}", uuid::Uuid::new_v4().simple());
        let options = PlatformArgs {
            max_in_flight: 64,
            test_clock: false,
            simulator_seed: 1,
            decline_basis_points: 0,
            hard_decline_basis_points: 0,
            transient_basis_points: 0,
            simulator_latency_ms: 0,
            simulator_latency_p99_ms: 0,
            charger_concurrency: 1,
            merchant_concurrency: 1,
            wechatpay_config: None,
            provider_qps: 0,
            operator_key: Some(operator_key.clone()),
            public_url: None,
            signing_session_minutes: 10,
            charge_window: "00:00-24:00".into(),
            wechat_api_url: format!("http://{wechat_addr}"),
            tencent_sms_url: autodebit_notifier::TENCENT_SMS_URL.into(),
            webhook_key: None,
            allow_loopback_webhooks: true,
            db_pool: 16,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            holiday_calendar: None,
            settlement_closer: true,
            simulator_statements: false,
            statement_discrepancies: false,
            initial_credit_score: autodebit_domain::credit::DEFAULT_INITIAL,
            contracts: Default::default(),
        };
        let services = [Service::Contracts, Service::Notifier];
        let running = platform::start(&url, &services, &listen, &options).await?;
        let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))?.connect().await?;
        let result = drive(&a, channel, &running.platform.store, &operator_key, &secret_file, hooks_addr).await;
        running.stop().await?;
        let mut report = result?;
        report.wechat_messages = wechat.messages().len();
        report.webhooks_received = received.load(Ordering::Relaxed);
        print_report(&report, a.json)
    }

    fn quantile(sorted: &[i64], per_mille: usize) -> i64 {
        if sorted.is_empty() {
            return 0;
        }
        sorted[((sorted.len() - 1) * per_mille / 1000).min(sorted.len() - 1)]
    }

    async fn drive(
        a: &NoticesArgs,
        channel: Channel,
        store: &EventStore,
        operator_key: &str,
        secret_file: &std::path::Path,
        hooks: std::net::SocketAddr,
    ) -> anyhow::Result<NoticesReport> {
        let (merchant_id, _plan, key) =
            onboard_with_key(&channel, operator_key, rand_digits()).await.context("onboarding the merchant")?;
        let settings = pb::NotifierSettings {
            quiet_hours: "none".into(),
            official_account: Some(pb::WechatChannel {
                app_id: APP_ID.into(),
                secret_ref: format!("file:{}", secret_file.display()),
                templates: [(
                    "charge_succeeded".to_string(),
                    pb::WechatTemplate {
                        template_id: TEMPLATE.into(),
                        fields: [
                            ("thing1".to_string(), "{service_name}".to_string()),
                            ("amount2".to_string(), "{amount}".to_string()),
                        ]
                        .into_iter()
                        .collect(),
                        page: String::new(),
                    },
                )]
                .into_iter()
                .collect(),
                per_second_limit: 1_000_000,
            }),
            ..Default::default()
        };
        NotifierServiceClient::new(channel.clone())
            .set_notifier_settings(authed(SetNotifierSettingsRequest { settings: Some(settings) }, &key)?)
            .await
            .context("SetNotifierSettings")?;
        WebhooksServiceClient::new(channel.clone())
            .create_webhook_endpoint(authed(
                CreateWebhookEndpointRequest {
                    url: format!("http://{hooks}/hooks"),
                    event_types: vec!["charge.succeeded".into()],
                    description: "bench".into(),
                },
                &key,
            )?)
            .await
            .context("CreateWebhookEndpoint")?;
        // The settings and the endpoint reach the notifier through the log: wait for them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(store, "SELECT COUNT(*) FROM notifier_webhook_endpoints").await? < 1
            || count(store, "SELECT COUNT(*) FROM notifier_settings").await? < 1
        {
            if Instant::now() > deadline {
                bail!("the notifier did not take in the settings and the endpoint");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // N charges succeeded, one per contract (the contracts themselves are not made: the
        // notifier takes the payer and merchant from the event).
        let n = a.notices;
        let make = |i: usize, at: i64| {
            let contract = autodebit_domain::ContractId::generate();
            let charge_id = autodebit_domain::ChargeId::for_period(contract, 1);
            let charge = charge_id.to_string();
            let e = pb::Event {
                kind: Some(autodebit_proto::EventKind::ChargeSucceeded(pb::ChargeSucceeded {
                    charge_id: charge.clone(),
                    contract_id: contract.to_string(),
                    merchant_id: merchant_id.clone(),
                    amount: Some(pb::Money { minor_units: 1_990, currency: "CNY".into() }),
                    provider_transaction_id: format!("4200000000{i:010}"),
                    succeeded_at_ms: at,
                    payer_id: format!("payer-{i}"),
                    out_trade_no: charge_id.out_trade_no(1),
                })),
            };
            StreamAppend {
                stream: format!("charge-{charge}"),
                expected: ExpectedVersion::NoStream,
                events: vec![codec::encode(e, &Cause::request(format!("bench/{i}")), at)],
            }
        };

        // Timed: the events appended one batch of 1,000 after another (each stamped with the
        // time of its append), then the wait for both senders.
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
            let at = now_ms();
            let batch: Vec<StreamAppend> = chunk.iter().map(|i| make(*i, at)).collect();
            store.append_many(&batch).await?;
        }
        let timeout = Duration::from_secs(a.timeout_secs);
        let (mut notices_done, mut hooks_done) = (None, None);
        loop {
            if notices_done.is_none()
                && count(store, "SELECT COUNT(*) FROM notifier_outbox WHERE state = 'done'").await? >= n as i64
            {
                notices_done = Some(started.elapsed().as_secs_f64());
            }
            if hooks_done.is_none()
                && count(store, "SELECT COUNT(*) FROM notifier_webhook_outbox WHERE state = 'succeeded'").await?
                    >= n as i64
            {
                hooks_done = Some(started.elapsed().as_secs_f64());
            }
            if notices_done.is_some() && hooks_done.is_some() {
                break;
            }
            if started.elapsed() > timeout {
                let q = count(store, "SELECT COUNT(*) FROM notifier_outbox").await?;
                let d = count(store, "SELECT COUNT(*) FROM notifier_outbox WHERE state = 'done'").await?;
                let h = count(store, "SELECT COUNT(*) FROM notifier_webhook_outbox WHERE state = 'succeeded'").await?;
                bail!("after {}s: {q} notices queued, {d} sent, {h} webhooks succeeded of {n}", a.timeout_secs);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_bytes = peak_rss_bytes();

        // Latencies, from the rows.
        let rows = store
            .query(
                "SELECT d.at_ms - n.recorded_at_ms FROM notifier_deliveries d
                 JOIN notifier_notices n ON n.notice_id = d.notice_id WHERE d.outcome = $1",
                &[autodebit_eventstore::Value::Int(pb::DeliveryOutcome::Sent as i64)],
            )
            .await?;
        let mut lat: Vec<i64> = rows.iter().filter_map(|r| r.i64(0)).collect();
        lat.sort_unstable();
        anyhow::ensure!(lat.len() >= n, "{} notices recorded as sent of {n}", lat.len());
        let rows = store
            .query("SELECT payload, next_at_ms FROM notifier_webhook_outbox WHERE state = 'succeeded'", &[])
            .await?;
        let mut hook_lat: Vec<i64> = rows
            .iter()
            .filter_map(|r| {
                let v: serde_json::Value = serde_json::from_str(r.text(0)?).ok()?;
                let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?.timestamp_millis();
                Some(r.i64(1)? - at)
            })
            .collect();
        hook_lat.sort_unstable();

        // The store's ceiling, same run.
        let ceiling = timed_appends(store, one_event_streams(n), 1, &ProgressBar::hidden()).await?;

        let nps = n as f64 / notices_done.unwrap_or(seconds);
        Ok(NoticesReport {
            backend: "sqlite",
            notices: n,
            notices_per_second: nps.round(),
            webhook_deliveries_per_second: (n as f64 / hooks_done.unwrap_or(seconds)).round(),
            seconds: (seconds * 1000.0).round() / 1000.0,
            p50_ms: quantile(&lat, 500),
            p99_ms: quantile(&lat, 990),
            webhook_p99_ms: quantile(&hook_lat, 990),
            wechat_messages: 0,
            webhooks_received: 0,
            peak_rss_bytes,
            append_events_per_second: ceiling.round(),
            ratio_to_append: (nps / ceiling * 1000.0).round() / 1000.0,
        })
    }
}
