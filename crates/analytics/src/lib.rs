//! The analytics service: read models of everything on the log, and questions answered from
//! them. It owns no aggregates.
//!
//! - `api`: gRPC handlers;
//! - `app`: the questions answered from the read models;
//! - `export`: tables and the log as CSV or Parquet files;
//! - `dashboard`: the same answers drawn as charts on the HTTP listener;
//! - `processor`: the log follower that projects every event;
//! - `rebuild`: projections made again from the log beside the live ones, then swapped in;
//! - `store`: the read-model tables and their statements, and the migrations.
//!
//! On SQLite the projections are kept in a database file of their own beside the log's
//! (`autodebit.db` → `autodebit.analytics.db`): the projector writes there with a writer of
//! its own, so it never waits for the charges' writers nor they for it, and reads the log as
//! any reader does. On PostgreSQL they are tables of the log's database. [`Stores`] holds the
//! two.

mod api;
mod app;
pub mod dashboard;
pub mod export;
mod processor;
#[cfg(test)]
mod projection_tests;
pub mod rebuild;
mod store;

use autodebit_eventstore::{EventStore, StoreOptions, Value};
use autodebit_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use autodebit_runtime::auth::{Authenticator, KeyFollower};
use autodebit_runtime::{Component, Platform, spawn_follower};

pub use app::BadQuestion;
pub use store::MIGRATIONS;

pub const GRPC_NAME: &str = "autodebit.analytics.v1.AnalyticsService";
const KEY_TABLE: &str = "analytics_api_keys";

/// What the analytics service is started with.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsConfig {
    /// The operator key (empty: no operator), for signing in to the dashboard.
    pub operator_key: String,
    /// The platform's public URL; an `https` one marks the dashboard's cookie `Secure`.
    pub public_url: String,
}

/// Where the projections of the log at `log_url` are kept, when not in the log's database: on
/// SQLite a file of their own beside the log's (`x.db` → `x.analytics.db`, the same query).
pub fn tables_url(log_url: &str) -> Option<String> {
    let rest = log_url.strip_prefix("sqlite://")?;
    let (path, query) = rest.split_once('?').map_or((rest, None), |(p, q)| (p, Some(q)));
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let stem = path.strip_suffix(".db").unwrap_or(path);
    Some(match query {
        Some(q) => format!("sqlite://{stem}.analytics.db?{q}"),
        None => format!("sqlite://{stem}.analytics.db"),
    })
}

/// The log, and the database the projections are kept in (the same one on PostgreSQL).
#[derive(Clone)]
pub struct Stores {
    pub log: EventStore,
    pub tables: EventStore,
}

impl Stores {
    /// The log at `log_url` and its projections' database, both migrated, the projections
    /// checked to be of this log.
    pub async fn open(log_url: &str) -> anyhow::Result<Stores> {
        let log = EventStore::open(StoreOptions::new(log_url)).await?;
        Stores::beside(log, log_url).await
    }

    /// The projections' database for `log`, opened at `log_url`.
    pub async fn beside(log: EventStore, log_url: &str) -> anyhow::Result<Stores> {
        log.migrate(&store::MIGRATIONS).await?;
        let tables = match tables_url(log_url) {
            Some(url) => {
                let tables = EventStore::open(StoreOptions::new(&url)).await?;
                tables.migrate(&store::MIGRATIONS).await?;
                tables
            }
            None => log.clone(),
        };
        let stores = Stores { log, tables };
        stores.of_this_log().await?;
        Ok(stores)
    }

    /// Projections made from another log (a log started afresh beside an old projections
    /// file) are emptied, so that they are made again from this one.
    async fn of_this_log(&self) -> anyhow::Result<()> {
        let id = match self.log.kind() {
            autodebit_eventstore::BackendKind::Sqlite => "lower(hex(event_id))",
            autodebit_eventstore::BackendKind::Postgres => "CAST(event_id AS TEXT)",
        };
        let first = self.log.query(&format!("SELECT {id} FROM events ORDER BY position LIMIT 1"), &[]).await?;
        let first = first.first().and_then(|r| r.text(0).map(str::to_string)).unwrap_or_default();
        let recorded = self.tables.query("SELECT first_event_id FROM analytics_log", &[]).await?;
        let recorded = recorded.first().and_then(|r| r.text(0).map(str::to_string));
        match recorded {
            Some(r) if r == first => {}
            None if first.is_empty() => {}
            None => {
                let mut tx = self.tables.begin().await?;
                tx.execute("INSERT INTO analytics_log (first_event_id) VALUES ($1)", &[Value::from(first)]).await?;
                tx.commit().await?;
            }
            Some(_) => {
                tracing::warn!("the analytics tables were made from another log; they are made again from this one");
                let mut tx = self.tables.begin().await?;
                tx.execute("DELETE FROM consumer_checkpoints WHERE consumer = $1", &[Value::from(processor::NAME)])
                    .await?;
                for table in rebuild::tables_of(None).map_err(anyhow::Error::msg)? {
                    tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
                }
                tx.execute("DELETE FROM analytics_log", &[]).await?;
                if !first.is_empty() {
                    tx.execute("INSERT INTO analytics_log (first_event_id) VALUES ($1)", &[Value::from(first)]).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// Starts the service: the projection follower (writing into `stores.tables`), the gRPC
/// routes and the dashboard.
pub async fn start(platform: &Platform, stores: Stores, config: AnalyticsConfig) -> anyhow::Result<Component> {
    let tables =
        Platform { store: stores.tables.clone(), clock: platform.clock.clone(), shutdown: platform.shutdown.clone() };
    autodebit_runtime::spawn_follower_apart(platform, stores.tables.clone(), processor::Projector::default());
    spawn_follower(platform, KeyFollower { name: "analytics.keys", table: KEY_TABLE });
    let routes = autodebit_runtime::grpc::routes_for(AnalyticsServiceServer::new(api::AnalyticsApi::new(
        tables.clone(),
        stores.clone(),
    )));
    let http = dashboard::routes(dashboard::Dashboard {
        platform: tables,
        auth: Authenticator::new(platform.store.clone(), &config.operator_key, KEY_TABLE),
        secure: config.public_url.starts_with("https://"),
    });
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http, key_table: KEY_TABLE })
}

#[cfg(test)]
mod tests {
    use super::{Stores, tables_url};
    use autodebit_eventstore::ExpectedVersion;
    use autodebit_proto::EventKind;
    use autodebit_proto::events::v1 as pb;
    use autodebit_runtime::codec::{Cause, encode};

    async fn append_one(stores: &Stores, merchant: &str) {
        let event = pb::Event {
            kind: Some(EventKind::MerchantApplied(pb::MerchantApplied {
                merchant_id: merchant.into(),
                ..Default::default()
            })),
        };
        let mut tx = stores.log.begin().await.unwrap();
        let new = encode(event, &Cause::request("test"), 1);
        tx.append(&format!("merchant-{merchant}"), ExpectedVersion::Any, vec![new]).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn projections_made_from_another_log_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("autodebit.db").display());
        let stores = Stores::open(&url).await.unwrap();
        append_one(&stores, "m1").await;
        // The projections of this log: its identity kept, a checkpoint and a row.
        let stores = Stores::open(&url).await.unwrap();
        let mut tx = stores.tables.begin().await.unwrap();
        tx.save_checkpoint(
            super::processor::NAME,
            Default::default(),
            autodebit_eventstore::Checkpoint { transaction_id: 0, position: 1 },
        )
        .await
        .unwrap();
        tx.execute("INSERT INTO analytics_merchants (merchant_id, industry, time_zone) VALUES ('m1', '', '')", &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows = |s: Stores| async move {
            let n = s.tables.query("SELECT COUNT(*) FROM analytics_merchants", &[]).await.unwrap();
            let at = s.tables.load_checkpoint(super::processor::NAME).await.unwrap();
            (n[0].i64(0).unwrap(), at.position)
        };
        assert_eq!(rows(Stores::open(&url).await.unwrap()).await, (1, 1), "the same log: kept");

        // A new log where the old one was, beside the old projections' file.
        std::fs::remove_file(dir.path().join("autodebit.db")).unwrap();
        for wal in ["autodebit.db-wal", "autodebit.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(wal));
        }
        let fresh = Stores::open(&url).await.unwrap();
        append_one(&fresh, "m2").await;
        assert_eq!(rows(Stores::open(&url).await.unwrap()).await, (0, 0), "another log: made again");
    }

    #[test]
    fn projections_have_a_file_beside_a_sqlite_log() {
        assert_eq!(tables_url("sqlite:///d/autodebit.db").as_deref(), Some("sqlite:///d/autodebit.analytics.db"));
        assert_eq!(tables_url("sqlite://x.db?mode=ro").as_deref(), Some("sqlite://x.analytics.db?mode=ro"));
        assert_eq!(tables_url("sqlite://log").as_deref(), Some("sqlite://log.analytics.db"));
        assert_eq!(tables_url("sqlite://:memory:"), None);
        assert_eq!(tables_url("postgres://localhost/db"), None);
    }
}
