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
    /// Provider calls in flight at once for one merchant.
    pub per_merchant_concurrency: usize,
    /// Provider calls per second at most (0: no limit; WeChat Pay allows 150 for deductions).
    pub provider_qps: u32,
}

impl Default for ChargerConfig {
    fn default() -> Self {
        ChargerConfig {
            simulator: SimulatorConfig::default(),
            concurrency: 256,
            per_merchant_concurrency: 256,
            provider_qps: 0,
        }
    }
}

/// Starts the service: the charge executor and the gRPC routes.
pub async fn start(platform: &Platform, config: ChargerConfig) -> anyhow::Result<Component> {
    let provider = Arc::new(autodebit_provider::limit::Limited::new(
        Simulator::new(config.simulator.clone()),
        config.per_merchant_concurrency,
        config.provider_qps,
    ));
    spawn_follower(platform, processor::ChargeExecutor::new(provider, platform.clock.clone(), config.concurrency));
    let routes = autodebit_runtime::grpc::routes_for(ChargerServiceServer::new(api::ChargerApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default() })
}
