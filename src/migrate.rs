//! `autodebit migrate`: brings a database's schema up to this binary's, or waits until another
//! process has (`--wait`), so a deployment can migrate once, in a job of its own, before its
//! services start.
use autodebit_eventstore::{LOG_MIGRATIONS, Migrations, pending_migrations};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "AUTODEBIT_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Apply nothing: wait until the database holds every migration this binary knows (another
    /// process migrates it), then exit 0.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

/// Every component's migrations beside the log's own, in the order a platform applies them.
fn components() -> [&'static Migrations; 6] {
    [
        &autodebit_runtime::clock::MIGRATIONS,
        &autodebit_contracts::MIGRATIONS,
        &autodebit_scheduler::store::MIGRATIONS,
        &autodebit_charger::MIGRATIONS,
        &autodebit_notifier::MIGRATIONS,
        &autodebit_analytics::MIGRATIONS,
    ]
}

/// What the databases behind `url` still lack, as `component version`.
async fn pending(url: &str) -> anyhow::Result<Vec<String>> {
    let mut all = vec![&LOG_MIGRATIONS];
    all.extend(components());
    let mut missing = pending_migrations(url, &all).await?;
    // On SQLite the projections have a file of their own.
    if let Some(tables) = autodebit_analytics::tables_url(url) {
        missing.extend(pending_migrations(&tables, &[&autodebit_analytics::MIGRATIONS]).await?);
    }
    Ok(missing)
}

pub async fn run(a: MigrateArgs) -> anyhow::Result<()> {
    let url = &a.database_url;
    if !a.wait {
        // Opening the log and the projections' database migrates both.
        let stores = autodebit_analytics::Stores::open(url).await?;
        for m in components() {
            stores.log.migrate(m).await?;
        }
        anyhow::ensure!(pending(url).await?.is_empty(), "migrations still pending after migrating");
        println!("schema up to date");
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout_seconds);
    loop {
        let why = match pending(url).await {
            Ok(missing) if missing.is_empty() => {
                println!("schema up to date");
                return Ok(());
            }
            Ok(missing) => format!("{} migrations pending, first {}", missing.len(), missing[0]),
            Err(e) => format!("database not ready: {e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("gave up after {} s: {why}", a.timeout_seconds);
        }
        eprintln!("waiting for the schema: {why}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
