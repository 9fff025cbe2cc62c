//! The contracts service: payers sign deduction agreements with merchants; merchants, payers
//! and customer service end them.

mod api;
mod app;

use autodebit_proto::contracts::v1::contracts_service_server::ContractsServiceServer;
use autodebit_runtime::{Component, Platform};

pub use app::{AppError, Contracts, SignRequest};

pub const GRPC_NAME: &str = "autodebit.contracts.v1.ContractsService";

/// Starts the service: its gRPC routes. It follows nothing on the log yet.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    let app = Contracts::new(platform.clone());
    let routes = autodebit_runtime::grpc::routes_for(ContractsServiceServer::new(api::ContractsApi::new(app)));
    Ok(Component { grpc_name: GRPC_NAME, routes })
}
