//! The analytics service: read models of everything on the log, and questions answered from
//! them. It owns no aggregates.

mod api;
mod processor;

use autodebit_eventstore::Migration;
use autodebit_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.analytics.v1.AnalyticsService";

const MIGRATIONS: &[Migration] = &[
    Migration::common(
        1,
        "CREATE TABLE analytics_contracts (
        contract_id      TEXT   PRIMARY KEY,
        merchant_id      TEXT   NOT NULL,
        state            TEXT   NOT NULL,
        signed_at_ms     BIGINT NOT NULL,
        ended_at_ms      BIGINT NOT NULL
    );
    CREATE TABLE analytics_charges (
        charge_id        TEXT   PRIMARY KEY,
        contract_id      TEXT   NOT NULL,
        merchant_id      TEXT   NOT NULL,
        amount           BIGINT NOT NULL,
        currency         TEXT   NOT NULL,
        state            TEXT   NOT NULL,
        code             TEXT   NOT NULL,
        due_at_ms        BIGINT NOT NULL,
        updated_at_ms    BIGINT NOT NULL
    );
    CREATE INDEX analytics_charges_state ON analytics_charges (state);
    CREATE TABLE analytics_counters (
        name             TEXT   PRIMARY KEY,
        value            BIGINT NOT NULL
    );",
    ),
    Migration::common(
        2,
        // Counters per merchant, so a merchant's summary is its own; and the keys it reads with.
        "CREATE TABLE analytics_merchant_counters (
        merchant_id      TEXT   NOT NULL,
        name             TEXT   NOT NULL,
        value            BIGINT NOT NULL,
        PRIMARY KEY (merchant_id, name)
    );
    CREATE INDEX analytics_contracts_merchant ON analytics_contracts (merchant_id, state);
    CREATE INDEX analytics_charges_merchant ON analytics_charges (merchant_id, state);
    CREATE TABLE analytics_api_keys (
        key_id           TEXT   PRIMARY KEY,
        merchant_id      TEXT   NOT NULL,
        secret_sha256    TEXT   NOT NULL,
        revoked          BIGINT NOT NULL
    );",
    ),
];

/// Starts the service: the projection follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate("analytics", MIGRATIONS).await?;
    spawn_follower(platform, processor::Projector);
    spawn_follower(platform, KeyFollower { name: "analytics.keys", table: "analytics_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(AnalyticsServiceServer::new(api::AnalyticsApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "analytics_api_keys" })
}
