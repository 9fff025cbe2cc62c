//! What every autodebit service shares: the platform clock, the event codec, log followers,
//! gRPC and HTTP plumbing, telemetry and shutdown.

pub mod auth;
pub mod clock;
pub mod codec;
pub mod follower;
pub mod grpc;
pub mod http;
pub mod links;
pub mod metrics;
pub mod repository;
pub mod risk_rules;
pub mod shutdown;
pub mod sql;
pub mod telemetry;

use autodebit_eventstore::EventStore;

pub use clock::PlatformClock;
pub use follower::{Decoded, Processor, spawn_follower, spawn_follower_apart, spawn_follower_into};
pub use shutdown::Shutdown;

/// What a service is given when it starts: the shared log, the clock, the stop signal.
#[derive(Clone)]
pub struct Platform {
    pub store: EventStore,
    pub clock: PlatformClock,
    pub shutdown: Shutdown,
}

/// A started service: its gRPC routes and the health names it reports under.
pub struct Component {
    /// Fully qualified gRPC service names, e.g. `autodebit.contracts.v1.ContractsService`.
    pub grpc_names: Vec<&'static str>,
    pub routes: axum::Router,
    /// Routes for the HTTP listener (pages, callbacks); empty for most services.
    pub http: axum::Router,
    /// The table of merchant API keys this service keeps (see [`auth::follow_key_event`]);
    /// its calls are authenticated against it.
    pub key_table: &'static str,
}
