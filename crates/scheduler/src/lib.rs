//! The scheduler service: keeps each contract's billing schedule and, when a period falls due
//! by the platform clock, issues its charge exactly once.

mod api;
mod due;
mod processor;
mod store;

use autodebit_proto::scheduler::v1::scheduler_service_server::SchedulerServiceServer;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.scheduler.v1.SchedulerService";

/// Starts the service: the contract follower, the due-charge loop and the gRPC routes.
pub async fn start(platform: &Platform) -> anyhow::Result<Component> {
    platform.store.migrate("scheduler", store::MIGRATIONS).await?;
    spawn_follower(platform, processor::ContractFollower);
    due::spawn(platform.clone());
    let routes =
        autodebit_runtime::grpc::routes_for(SchedulerServiceServer::new(api::SchedulerApi::new(platform.clone())));
    Ok(Component { grpc_names: vec![GRPC_NAME], routes, http: Default::default() })
}
