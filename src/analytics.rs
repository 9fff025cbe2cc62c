//! `autodebit analytics`: work on the analytics projections of a database.
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum AnalyticsCommand {
    /// Rebuilds projections from the log into shadow tables and swaps them in; the live tables
    /// serve meanwhile, and a running platform may keep running.
    Rebuild {
        /// One projection: contracts, charges, funnel, notices, counters, settlements or risk (all when absent).
        #[arg(long)]
        projection: Option<String>,
        #[command(flatten)]
        database: Database,
    },
    /// Writes an analytics table, or `events` (the decoded log), to a CSV or Parquet file.
    Export {
        /// `events`, or a table: merchants, contracts, charges, refunds, signing_sessions,
        /// notices, counters, merchant_counters (with or without `analytics_`).
        #[arg(long)]
        table: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long)]
        out: PathBuf,
        /// From this time (ms since the epoch), of the table's time column or the event's.
        #[arg(long)]
        since: Option<i64>,
        /// Before this time (ms since the epoch).
        #[arg(long)]
        until: Option<i64>,
        #[command(flatten)]
        database: Database,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Parquet,
}

/// Which database: the embedded default's directory, or a URL.
#[derive(clap::Args)]
pub struct Database {
    /// The directory of an embedded SQLite database (`autodebit run --data-dir`).
    #[arg(long, conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "AUTODEBIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl Database {
    pub fn url(&self) -> anyhow::Result<String> {
        match (&self.database_url, &self.data_dir) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(dir)) => {
                let file = dir.join("autodebit.db");
                anyhow::ensure!(file.exists(), "data_dir: no database at {}", file.display());
                Ok(format!("sqlite://{}", file.display()))
            }
            (None, None) => anyhow::bail!("give --data-dir DIR or --database-url URL"),
        }
    }
}

pub async fn run(command: AnalyticsCommand) -> anyhow::Result<()> {
    match command {
        AnalyticsCommand::Rebuild { projection, database } => {
            let url = database.url()?;
            let stores = autodebit_analytics::Stores::open(&url).await.context("opening the database")?;
            if let Some(p) = &projection {
                autodebit_analytics::rebuild::tables_of(Some(p)).map_err(|e| anyhow::anyhow!("projection: {e}"))?;
            }
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let done = autodebit_analytics::rebuild::rebuild(&stores, projection.as_deref(), &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish_and_clear();
            let what = projection.as_deref().unwrap_or("every projection");
            eprintln!("rebuilt {what} from {} events and swapped it in", done.events);
            Ok(())
        }
        AnalyticsCommand::Export { table, format, out, since, until, database } => {
            let url = database.url()?;
            let stores = autodebit_analytics::Stores::open(&url).await.context("opening the database")?;
            let format = match format {
                ExportFormat::Csv => autodebit_analytics::export::Format::Csv,
                ExportFormat::Parquet => autodebit_analytics::export::Format::Parquet,
            };
            let file = std::fs::File::create(&out).with_context(|| format!("out: cannot create {}", out.display()))?;
            let what = autodebit_analytics::export::Export { name: table.clone(), since, until, merchant: None };
            let n = autodebit_analytics::export::export(&stores, &what, format, file).await?;
            eprintln!("wrote {n} rows of {table} to {}", out.display());
            Ok(())
        }
    }
}
