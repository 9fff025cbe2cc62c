//! The notifier service: tells payers what happened to their contracts and charges. Every
//! notice is recorded on the log; the log channel writes it to the process log.

mod api;
mod processor;

use autodebit_eventstore::Migration;
use autodebit_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.notifier.v1.NotifierService";

const MIGRATIONS: &[Migration] = &[
    Migration::common(
        1,
        "CREATE TABLE notifier_notices (
        notice_id      TEXT   PRIMARY KEY,
        kind           BIGINT NOT NULL,
        channel        TEXT   NOT NULL,
        recipient      TEXT   NOT NULL,
        contract_id    TEXT   NOT NULL,
        charge_id      TEXT   NOT NULL,
        text           TEXT   NOT NULL,
        recorded_at_ms BIGINT NOT NULL
    );
    CREATE INDEX notifier_notices_contract ON notifier_notices (contract_id, recorded_at_ms);",
    ),
    Migration::common(
        2,
        // Whose contract each is, so a merchant reads only its own notices; and the keys they
        // read with.
        "CREATE TABLE notifier_contracts (
        contract_id    TEXT   PRIMARY KEY,
        merchant_id    TEXT   NOT NULL
    );
    CREATE TABLE notifier_api_keys (
        key_id         TEXT   PRIMARY KEY,
        merchant_id    TEXT   NOT NULL,
        secret_sha256  TEXT   NOT NULL,
        revoked        BIGINT NOT NULL
    );",
    ),
];

/// Starts the service: the notice follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate("notifier", MIGRATIONS).await?;
    spawn_follower(platform, processor::NoticeWriter::new(platform.clock.clone(), platform.store.clone()));
    spawn_follower(platform, KeyFollower { name: "notifier.keys", table: "notifier_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(NotifierServiceServer::new(api::NotifierApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "notifier_api_keys" })
}
