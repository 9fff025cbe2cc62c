//! The notifier service: tells payers what happened to their contracts and charges. Every
//! notice is recorded on the log; the log channel writes it to the process log.
//!
//! - `api`: gRPC handlers;
//! - `app`: what each event's notice says and to whom, and the notices a caller may read;
//! - `processor`: the log follower that records notices;
//! - `store`: the notifier's tables and their statements, and the migrations.

mod api;
mod app;
mod processor;
mod store;
pub mod webhooks;

use autodebit_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.notifier.v1.NotifierService";

/// Starts the service: the notice follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    spawn_follower(platform, processor::NoticeWriter::new(platform.clock.clone(), platform.store.clone()));
    spawn_follower(platform, KeyFollower { name: "notifier.keys", table: "notifier_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(NotifierServiceServer::new(api::NotifierApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "notifier_api_keys" })
}
