//! Schema migrations: each component keeps its tables as two `sqlx::migrate!` directories,
//! `migrations/sqlite` and `migrations/postgres`, and applies them when it starts.
//!
//! All components share sqlx's bookkeeping table, `_sqlx_migrations`, so their versions must
//! not collide: each component owns a range of versions ([`Migrations::versions`]), and a
//! migration outside its component's range is refused before anything runs.
//!
//! | range | component |
//! |---|---|
//! | 1–99 | the event log itself |
//! | 100–199 | the platform clock |
//! | 1000–1999 | contracts |
//! | 2000–2999 | scheduler |
//! | 3000–3999 | charger |
//! | 4000–4999 | notifier |
//! | 5000–5999 | analytics |
use crate::{BackendKind, EventStore, Result, StoreError, TxInner};
use sqlx::migrate::Migrator;
use std::ops::Range;

/// One component's migrations, one directory per backend.
pub struct Migrations {
    pub component: &'static str,
    /// The versions this component may use.
    pub versions: Range<i64>,
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

/// `Migrations` of the calling crate from its `migrations/sqlite` and `migrations/postgres`
/// directories. The calling crate depends on `sqlx` with the `migrate` and `macros` features.
#[macro_export]
macro_rules! migrations {
    ($component:literal, $versions:expr) => {
        $crate::Migrations {
            component: $component,
            versions: $versions,
            sqlite: ::sqlx::migrate!("migrations/sqlite"),
            postgres: ::sqlx::migrate!("migrations/postgres"),
        }
    };
}

/// The event log's own tables.
pub static LOG_MIGRATIONS: Migrations = crate::migrations!("eventstore", 1..100);

/// The migrations of `all` the database at `url` has not applied, as `component version`,
/// read over one connection of its own without applying anything (so that a process can wait
/// for another to migrate). A database with no migrations at all has every one pending.
pub async fn pending_migrations(url: &str, all: &[&Migrations]) -> Result<Vec<String>> {
    use sqlx::Connection;
    const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
    let (kind, applied): (BackendKind, std::result::Result<Vec<i64>, sqlx::Error>) = if url.starts_with("sqlite:") {
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .map_err(|e| StoreError::Invalid(format!("database url: {e}")))?
            .read_only(true);
        let mut c = sqlx::SqliteConnection::connect_with(&options).await?;
        (BackendKind::Sqlite, sqlx::query_scalar(APPLIED).fetch_all(&mut c).await)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        (BackendKind::Postgres, sqlx::query_scalar(APPLIED).fetch_all(&mut c).await)
    } else {
        return Err(StoreError::Invalid(format!("database url {url:?} must start with sqlite: or postgres:")));
    };
    let applied: std::collections::HashSet<i64> = match applied {
        Ok(v) => v.into_iter().collect(),
        // No bookkeeping table yet: nothing applied.
        Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Default::default(),
        Err(e) => return Err(e.into()),
    };
    Ok(all
        .iter()
        .flat_map(|m| m.for_backend(kind).migrations.iter().map(move |x| (m.component, x.version)))
        .filter(|(_, v)| !applied.contains(v))
        .map(|(c, v)| format!("{c} {v}"))
        .collect())
}

impl Migrations {
    /// Migrations given as SQL text, the same on both backends (for tests and tools).
    pub fn from_sql(component: &'static str, versions: Range<i64>, steps: &[(i64, &str)]) -> Self {
        let migrator = || {
            let list: Vec<sqlx::migrate::Migration> = steps
                .iter()
                .map(|(v, sql)| {
                    sqlx::migrate::Migration::new(
                        *v,
                        format!("{component} {v}").into(),
                        sqlx::migrate::MigrationType::Simple,
                        sql.to_string().into(),
                        false,
                    )
                })
                .collect();
            Migrator { migrations: list.into(), ..Migrator::DEFAULT }
        };
        Migrations { component, versions, sqlite: migrator(), postgres: migrator() }
    }

    fn for_backend(&self, kind: BackendKind) -> &Migrator {
        match kind {
            BackendKind::Sqlite => &self.sqlite,
            BackendKind::Postgres => &self.postgres,
        }
    }
}

impl EventStore {
    /// Applies the migrations of `m` that have not run yet, in version order, in one
    /// transaction. Safe to call from several processes at once: on PostgreSQL they queue on
    /// one transaction-scoped lock, and a latecomer finds the work done.
    pub async fn migrate(&self, m: &Migrations) -> Result<()> {
        let kind = self.kind();
        let source = m.for_backend(kind);
        if let Some(stray) = source.migrations.iter().find(|x| !m.versions.contains(&x.version)) {
            return Err(StoreError::Invalid(format!(
                "migration {} of {} lies outside its versions {:?}",
                stray.version, m.component, m.versions
            )));
        }
        // Other components' rows share the bookkeeping table; the lock is taken here, inside
        // the transaction, so that it is held until the migrations commit.
        let migrator =
            Migrator { migrations: source.migrations.clone(), ignore_missing: true, locking: false, no_tx: false };
        let mut tx = self.begin().await?;
        let run = match &mut tx.inner {
            TxInner::Sqlite(t) => migrator.run(&mut **t).await,
            TxInner::Postgres(t) => {
                sqlx::query("SELECT pg_advisory_xact_lock(7305101)").execute(&mut **t).await?;
                migrator.run(&mut **t).await
            }
        };
        run.map_err(|e| StoreError::Invalid(format!("migrating {}: {e}", m.component)))?;
        tx.commit().await?;
        tracing::debug!(component = m.component, "schema up to date");
        Ok(())
    }
}
