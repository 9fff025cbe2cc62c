//! `autodebit`: the whole platform in one process, one service per process, a client for any
//! of its RPCs, a demo, benchmarks, and the event log's export and import.

mod analytics;
mod bench;
mod call;
mod demo;
mod demo_risk;
mod ledger;
mod log;
mod migrate;
mod reconcile;

use autodebit::platform;

/// Allocation-heavy paths (event encoding, row decoding) run markedly faster on mimalloc than
/// on the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "autodebit",
    version,
    about = "Recurring-deduction (auto-debit) agreements: sign once, charge on schedule"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// All five services in one process on an embedded SQLite file.
    Run {
        /// Where the SQLite file lives.
        #[arg(long, default_value = "./autodebit-data")]
        data_dir: PathBuf,
        /// Run all five services on this database instead (e.g. `postgres://…`).
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        listen: platform::ListenArgs,
        #[command(flatten)]
        options: platform::PlatformArgs,
    },
    /// One service per process, sharing one PostgreSQL log.
    Serve {
        #[arg(value_enum)]
        service: platform::Service,
        /// `postgres://…` (or `sqlite://…` for a single machine).
        #[arg(long, env = "AUTODEBIT_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[command(flatten)]
        listen: platform::ListenArgs,
        #[command(flatten)]
        options: platform::PlatformArgs,
    },
    /// Brings a database's schema up to this binary's (or, with `--wait`, waits until another
    /// process has), then exits: a deployment's migration step.
    Migrate(migrate::MigrateArgs),
    /// Calls one RPC of a running platform with a JSON request; prints the JSON answer.
    Call(call::CallArgs),
    /// Signs N contracts on a test clock, advances D days, and reports what happened as JSON.
    Demo(demo::DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A mock WeChat Pay (papay v2 deductions and order queries) that checks every signature.
    MockWechatpay(MockArgs),
    /// The event log as portable JSON lines: export one, import one into an empty database.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// The analytics projections: rebuild them from the log, export them.
    #[command(subcommand)]
    Analytics(analytics::AnalyticsCommand),
    /// The ledger: check it against the log.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Reconciles a merchant's statement of a day on a running platform; prints the report.
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(clap::Args)]
struct MockArgs {
    /// Where to listen (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    #[arg(long, default_value = "wxd930ea5d5a258f4f")]
    appid: String,
    #[arg(long, default_value = "10000100")]
    mch_id: String,
    /// The merchant's APIv2 key the requests are signed with.
    #[arg(
        long,
        env = "AUTODEBIT_MOCK_WECHATPAY_KEY",
        hide_env_values = true,
        default_value = "192006250b4c09247ec02edce69f6a2d"
    )]
    api_key: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Deductions per 10,000 accepted, then failed (PAY_FAIL) with NOTENOUGH.
    #[arg(long, default_value_t = 0)]
    notenough_basis_points: u32,
    /// Deductions per 10,000 answered SYSTEMERROR (half of them taken all the same).
    #[arg(long, default_value_t = 0)]
    systemerror_basis_points: u32,
    /// Deductions per 10,000 answered USERPAYING (debited; the first query still says so).
    #[arg(long, default_value_t = 0)]
    userpaying_basis_points: u32,
    /// How many times a result or signing callback is posted before the mock gives up.
    #[arg(long, default_value_t = 3)]
    callback_attempts: u32,
    /// How long an accepted deduction stays ACCEPT before it succeeds or fails (PAY_FAIL).
    #[arg(long, default_value_t = 100)]
    deduct_after_ms: u64,
    /// The merchant's APIv3 key: v3 notices' resources (complaints) are encrypted under it.
    #[arg(long, default_value = autodebit_mock_wechatpay::API_V3_KEY)]
    api_v3_key: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let format = match cli.log_format {
            LogFormat::Text => autodebit_runtime::telemetry::LogFormat::Text,
            LogFormat::Json => autodebit_runtime::telemetry::LogFormat::Json,
        };
        match cli.command {
            Command::Run { data_dir, database_url, listen, mut options } => {
                // One process on one machine: a merchant's test receiver on loopback is fine.
                options.allow_loopback_webhooks = true;
                let _telemetry = autodebit_runtime::telemetry::init("autodebit", format, "info");
                let url = match database_url {
                    Some(url) => url,
                    None => {
                        std::fs::create_dir_all(&data_dir)?;
                        format!("sqlite://{}", data_dir.join("autodebit.db").display())
                    }
                };
                platform::run_until_stopped(&url, &platform::Service::all(), listen, options).await
            }
            Command::Serve { service, database_url, listen, options } => {
                let _telemetry =
                    autodebit_runtime::telemetry::init(&format!("autodebit-{}", service.name()), format, "info");
                platform::run_until_stopped(&database_url, &[service], listen, options).await
            }
            Command::Call(args) => call::run(args).await,
            Command::Reconcile(args) => reconcile::run(args).await,
            Command::Demo(args) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-demo", format, "warn");
                demo::run(args).await
            }
            Command::MockWechatpay(m) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-mock-wechatpay", format, "info");
                let listener = tokio::net::TcpListener::bind(m.addr).await?;
                println!("autodebit mock-wechatpay listening http={}", local(&listener)?);
                let config = autodebit_mock_wechatpay::MockConfig {
                    appid: m.appid,
                    mch_id: m.mch_id,
                    api_key: m.api_key,
                    seed: m.seed,
                    notenough_basis_points: m.notenough_basis_points,
                    systemerror_basis_points: m.systemerror_basis_points,
                };
                let options = autodebit_mock_wechatpay::MockOptions {
                    userpaying_basis_points: m.userpaying_basis_points,
                    callback_attempts: m.callback_attempts.max(1),
                    deduct_after: std::time::Duration::from_millis(m.deduct_after_ms),
                    api_v3_key: m.api_v3_key,
                    ..Default::default()
                };
                tokio::select! {
                    served = autodebit_mock_wechatpay::serve_with(listener, config, options) => Ok(served?),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
            Command::Migrate(m) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-migrate", format, "warn");
                migrate::run(m).await
            }
            Command::Log(l) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-log", format, "warn");
                log::run(l).await
            }
            Command::Ledger(l) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-ledger", format, "warn");
                ledger::run(l).await
            }
            Command::Analytics(a) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-analytics", format, "warn");
                analytics::run(a).await
            }
            Command::Bench(b) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-bench", format, "warn");
                bench::run(b).await
            }
        }
    })
}

/// The address a listener actually got (port 0 picks a free one).
pub(crate) fn local(listener: &tokio::net::TcpListener) -> anyhow::Result<SocketAddr> {
    Ok(listener.local_addr()?)
}
