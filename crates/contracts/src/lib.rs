//! The contracts service: merchants (onboarding, review, API keys), their deduction plans,
//! and the contracts payers sign, through their whole life.

mod api;
mod app;
mod jobs;
mod merchants;
mod page;
mod plans;
mod processor;
pub mod regions;
mod signing;
mod store;
mod wechatpay;

use autodebit_domain::merchant::IndustryPolicy;
use autodebit_proto::contracts::v1::{
    contracts_service_server::ContractsServiceServer, merchants_service_server::MerchantsServiceServer,
    plans_service_server::PlansServiceServer,
};
use autodebit_runtime::grpc::routes_for;
use autodebit_runtime::{Component, Platform, spawn_follower};

pub use app::{AppError, Contracts};
pub use autodebit_runtime::auth::sha256_hex;
pub use jobs::ZombiePolicy;
pub use merchants::merchant_id_for;

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

/// Starts the service: its tables, the charge-outcome follower, the clean-up jobs and the
/// gRPC routes.
pub async fn start(platform: &Platform, config: ContractsConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    let app = Contracts::new(platform.clone());
    spawn_follower(platform, processor::ChargeOutcomes { app: app.clone() });
    let accounts = std::sync::Arc::new(autodebit_provider::wechatpay::Accounts::new(&config.wechatpay));
    let signing = signing::Signing::new(
        app.clone(),
        config.public_url.clone(),
        config.session_ttl,
        config.regions.clone(),
        accounts,
    );
    jobs::spawn(app.clone(), signing.clone(), config.zombies.clone());
    let merchants = merchants::Merchants::new(platform.clone(), config.industries.clone());
    let http = page::routes(page::PageState { signing: signing.clone(), merchants: merchants.clone() })
        .merge(wechatpay::routes(signing.clone()));
    let routes = routes_for(ContractsServiceServer::new(api::ContractsApi::new(app, signing)))
        .merge(routes_for(MerchantsServiceServer::new(merchants::MerchantsApi::new(merchants))))
        .merge(routes_for(PlansServiceServer::new(plans::PlansApi::new(platform.clone()))));
    Ok(Component { grpc_names: GRPC_NAMES.to_vec(), routes, http, key_table: "contracts_api_keys" })
}
