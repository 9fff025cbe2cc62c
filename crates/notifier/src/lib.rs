//! The notifier service: tells payers what happened to their contracts and charges. Every
//! notice is recorded on the log; the log channel writes it to the process log.

mod api;
mod processor;

use autodebit_eventstore::Migrations;
use autodebit_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.notifier.v1.NotifierService";

static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("notifier", 4000..5000);

/// Starts the service: the notice follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate(&MIGRATIONS).await?;
    spawn_follower(platform, processor::NoticeWriter::new(platform.clock.clone(), platform.store.clone()));
    spawn_follower(platform, KeyFollower { name: "notifier.keys", table: "notifier_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(NotifierServiceServer::new(api::NotifierApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "notifier_api_keys" })
}
