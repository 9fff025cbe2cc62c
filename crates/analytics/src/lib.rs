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

mod api;
mod app;
pub mod dashboard;
pub mod export;
mod processor;
#[cfg(test)]
mod projection_tests;
pub mod rebuild;
mod store;

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

/// Starts the service: the projection follower, the gRPC routes and the dashboard.
pub async fn start(platform: &Platform, config: AnalyticsConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    spawn_follower(platform, processor::Projector::default());
    spawn_follower(platform, KeyFollower { name: "analytics.keys", table: KEY_TABLE });
    let routes =
        autodebit_runtime::grpc::routes_for(AnalyticsServiceServer::new(api::AnalyticsApi::new(platform.clone())));
    let http = dashboard::routes(dashboard::Dashboard {
        platform: platform.clone(),
        auth: Authenticator::new(platform.store.clone(), &config.operator_key, KEY_TABLE),
        secure: config.public_url.starts_with("https://"),
    });
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http, key_table: KEY_TABLE })
}
