//! The analytics service: read models of everything on the log, and questions answered from
//! them. It owns no aggregates.
//!
//! - `api`: gRPC handlers;
//! - `app`: the questions answered from the read models;
//! - `processor`: the log follower that projects every event;
//! - `rebuild`: projections made again from the log beside the live ones, then swapped in;
//! - `store`: the read-model tables and their statements, and the migrations.

mod api;
mod app;
mod processor;
#[cfg(test)]
mod projection_tests;
pub mod rebuild;
mod store;

use autodebit_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub use store::MIGRATIONS;

pub const GRPC_NAME: &str = "autodebit.analytics.v1.AnalyticsService";

/// Starts the service: the projection follower and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    spawn_follower(platform, processor::Projector::default());
    spawn_follower(platform, KeyFollower { name: "analytics.keys", table: "analytics_api_keys" });
    let routes =
        autodebit_runtime::grpc::routes_for(AnalyticsServiceServer::new(api::AnalyticsApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default(), key_table: "analytics_api_keys" })
}
