//! `autodebit`: the whole platform in one process, one service per process, a demo, and
//! benchmarks.

mod bench;
mod demo;
mod platform;

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
        #[arg(long, env = "AUTODEBIT_DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        listen: platform::ListenArgs,
        #[command(flatten)]
        options: platform::PlatformArgs,
    },
    /// Signs N contracts on a test clock, advances D days, and reports what happened as JSON.
    Demo(demo::DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
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
            Command::Run { data_dir, database_url, listen, options } => {
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
            Command::Demo(args) => {
                let _telemetry = autodebit_runtime::telemetry::init("autodebit-demo", format, "warn");
                demo::run(args).await
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
