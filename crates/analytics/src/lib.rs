//! The analytics service: read models of everything on the log, and questions answered from
//! them. It owns no aggregates.

mod api;
mod processor;

use autodebit_eventstore::Migrations;
use autodebit_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.analytics.v1.AnalyticsService";

static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("analytics", 5000..6000);

/// Starts the service: the projection follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate(&MIGRATIONS).await?;
    spawn_follower(platform, processor::Projector);
    spawn_follower(platform, KeyFollower { name: "analytics.keys", table: "analytics_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(AnalyticsServiceServer::new(api::AnalyticsApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "analytics_api_keys" })
}
