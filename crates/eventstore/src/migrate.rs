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
