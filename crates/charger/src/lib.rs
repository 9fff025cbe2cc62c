//! The charger service: executes each scheduled charge through a provider and records its one
//! outcome.

mod api;
mod processor;

use autodebit_proto::charger::v1::charger_service_server::ChargerServiceServer;
use autodebit_runtime::{Component, Platform, spawn_follower};
use std::sync::Arc;

pub use autodebit_provider::simulator::{Simulator, SimulatorConfig};

pub const GRPC_NAME: &str = "autodebit.charger.v1.ChargerService";

/// How the charger runs.
#[derive(Debug, Clone)]
pub struct ChargerConfig {
    pub simulator: SimulatorConfig,
    /// Provider calls in flight at once.
    pub concurrency: usize,
}

impl Default for ChargerConfig {
    fn default() -> Self {
        ChargerConfig { simulator: SimulatorConfig::default(), concurrency: 256 }
    }
}

/// Starts the service: the charge executor and the gRPC routes.
pub async fn start(platform: &Platform, config: ChargerConfig) -> anyhow::Result<Component> {
    let provider = Arc::new(Simulator::new(config.simulator.clone()));
    spawn_follower(platform, processor::ChargeExecutor::new(provider, platform.clock.clone(), config.concurrency));
    let routes = autodebit_runtime::grpc::routes_for(ChargerServiceServer::new(api::ChargerApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default() })
}
