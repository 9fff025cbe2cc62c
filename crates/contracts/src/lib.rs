//! The contracts service: merchants (onboarding, review, API keys), their deduction plans,
//! and the contracts payers sign, through their whole life.
//!
//! `api` holds the handlers (gRPC, the authorization page, WeChat Pay's notices), `app` the
//! use cases, `processor` the follower of charge outcomes, `worker` the clean-up job and
//! `store` the service's tables, queries and migrations. The rules are `autodebit_domain`'s.

mod api;
mod app;
mod processor;
mod store;
mod worker;

use autodebit_domain::merchant::IndustryPolicy;
use autodebit_proto::contracts::v1::{
    contracts_service_server::ContractsServiceServer, merchants_service_server::MerchantsServiceServer,
    plans_service_server::PlansServiceServer,
};
use autodebit_runtime::grpc::routes_for;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub use app::rebuild::rebuild_tables;
pub use app::regions;
pub use app::{AppError, Contracts};
pub use autodebit_domain::merchant::merchant_id_for;
pub use autodebit_domain::zombie::ZombiePolicy;
pub use autodebit_runtime::auth::sha256_hex;
pub use store::MIGRATIONS;

pub const GRPC_NAMES: &[&str] = &[
    "autodebit.contracts.v1.ContractsService",
    "autodebit.contracts.v1.MerchantsService",
    "autodebit.contracts.v1.PlansService",
];

/// How the contracts service runs.
#[derive(Debug, Clone)]
pub struct ContractsConfig {
    pub industries: IndustryPolicy,
    pub zombies: ZombiePolicy,
    /// Where payers reach the HTTP listener: authorization URLs start with it.
    pub public_url: String,
    /// How long a signing session stays open.
    pub session_ttl: std::time::Duration,
    pub regions: std::sync::Arc<dyn regions::RegionLookup>,
    /// Merchants that sign and charge through WeChat Pay, with their accounts.
    pub wechatpay: Vec<(String, std::sync::Arc<autodebit_provider::wechatpay::WeChatPay>)>,
}

impl std::fmt::Debug for dyn regions::RegionLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegionLookup")
    }
}

/// Starts the service: its tables, the charge-outcome follower, the clean-up job and the
/// gRPC and HTTP routes.
pub async fn start(platform: &Platform, config: ContractsConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    let app = Contracts::new(platform.clone());
    spawn_follower(platform, processor::ChargeOutcomes { app: app.clone() });
    let accounts = std::sync::Arc::new(autodebit_provider::wechatpay::Accounts::new(&config.wechatpay));
    let signing = app::signing::Signing::new(
        app.clone(),
        config.public_url.clone(),
        config.session_ttl,
        config.regions.clone(),
        accounts,
    );
    worker::spawn(app.clone(), signing.clone(), config.zombies);
    let merchants = app::merchants::Merchants::new(platform.clone(), config.industries.clone());
    let http = api::page::routes(api::page::PageState { signing: signing.clone(), merchants: merchants.clone() })
        .merge(api::wechatpay::routes(signing.clone()))
        .merge(api::me::routes(api::me::MeState {
            contracts: app.clone(),
            links: autodebit_runtime::links::payer_page_key(&platform.store).await?,
        }));
    let routes = routes_for(ContractsServiceServer::new(api::contracts::ContractsApi::new(app, signing)))
        .merge(routes_for(MerchantsServiceServer::new(api::merchants::MerchantsApi::new(merchants))))
        .merge(routes_for(PlansServiceServer::new(api::plans::PlansApi::new(platform.clone()))));
    Ok(Component { grpc_names: GRPC_NAMES.to_vec(), routes, http, key_table: "contracts_api_keys" })
}
