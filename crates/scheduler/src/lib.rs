//! The scheduler service: keeps each contract's billing schedule and, when a period falls due
//! by the platform clock, issues its charge exactly once.
//!
//! - `api`: the gRPC handlers (parse, call `app`, map the answer);
//! - `app`: the use cases (schedule and status, RecordUsage, TriggerCharge);
//! - `processor`: the log follower that opens, stops, resumes and modifies schedules;
//! - `worker`: the due loop and what it issues;
//! - `store`: the tables, every statement on them, and the migrations.
//!
//! The rules themselves — the timeline, the limits, the window — are the domain's
//! (`autodebit_domain::schedule`, `limits`, `window`).

mod api;
mod app;
mod holds;
mod payers;
mod processor;
mod rules;
pub mod store;
mod worker;

/// The due loop's passes, for the benchmark (`bench billing-run`).
pub use worker::due;

use autodebit_domain::window::DailyWindow;
use autodebit_proto::scheduler::v1::risk_service_server::RiskServiceServer;
use autodebit_proto::scheduler::v1::scheduler_service_server::SchedulerServiceServer;
use autodebit_runtime::metrics::{self, TableGauge};
use autodebit_runtime::{Component, Platform, spawn_follower};

pub const GRPC_NAME: &str = "autodebit.scheduler.v1.SchedulerService";
pub const RISK_GRPC_NAME: &str = "autodebit.scheduler.v1.RiskService";

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// When notices and charges may go out; what falls due outside waits for it to open.
    pub window: DailyWindow,
}

/// The scheduler's depths, counted from its tables.
const TABLE_GAUGES: &[TableGauge] = &[
    TableGauge::count(metrics::CHARGES_ON_HOLD, "SELECT COUNT(*) FROM scheduler_risk_holds WHERE state = 'held'"),
    TableGauge::count(metrics::RETRIES_WAITING, "SELECT COUNT(*) FROM scheduler_retries WHERE state = 'waiting'"),
];

/// Starts the service: the contract follower, the due-charge loop and the gRPC routes.
pub async fn start(platform: &Platform, config: SchedulerConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    spawn_follower(platform, processor::ContractFollower);
    spawn_follower(platform, payers::PayerFollower);
    metrics::spawn_table_gauges(platform, TABLE_GAUGES);
    let links = autodebit_runtime::links::payer_page_key(&platform.store).await?;
    let holds = holds::Holds::new(platform.clone(), config.window);
    let checked_through = worker::spawn(platform.clone(), config.window, holds.clone());
    let app = app::App::new(platform.clone(), config.window, checked_through);
    let routes = autodebit_runtime::grpc::routes_for(SchedulerServiceServer::new(api::SchedulerApi::new(app))).merge(
        autodebit_runtime::grpc::routes_for(RiskServiceServer::new(api::risk::RiskApi::new(
            holds.clone(),
            rules::Rules::new(platform.clone()),
        ))),
    );
    Ok(Component {
        grpc_names: vec![GRPC_NAME, RISK_GRPC_NAME],
        routes,
        http: api::page::routes(holds).merge(api::me::routes(api::me::MePage { store: platform.store.clone(), links })),
        key_table: "scheduler_api_keys",
    })
}
