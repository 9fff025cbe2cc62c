//! The charger service: executes each scheduled charge through a provider and records its one
//! outcome, and carries out refunds.
//!
//! - `api`: gRPC handlers, and WeChat Pay's HTTP callbacks (`api::callbacks`);
//! - `app`: the use cases (outcomes, refunds, charges read back), through `runtime::repository`;
//! - `processor`: the log followers (attempts started, the provider's notices);
//! - `receipts` (and `pdf`): a receipt per succeeded charge and refund, as HTML and PDF;
//! - `settlement`: settlement batches and the ledger, kept from the log, and the batch closer;
//! - `worker`: the attempts worker and the refunds worker;
//! - `store`: the charger's tables and their statements, and the migrations.

mod api;
mod app;
pub mod complaints;
mod observed;
mod pdf;
mod processor;
mod provider_complaints;
pub mod receipts;
pub mod reconcile;
pub mod settlement;
mod store;
mod worker;

pub use app::SETTLE_LATENCY;
pub use store::MIGRATIONS;

use autodebit_proto::charger::v1::charger_service_server::ChargerServiceServer;
use autodebit_provider::Provider;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::metrics::{self, TableGauge};
use autodebit_runtime::{Component, Platform, spawn_follower};
use std::collections::HashMap;
use std::sync::Arc;

pub use autodebit_provider::simulator::{Simulator, SimulatorConfig};

pub const GRPC_NAME: &str = "autodebit.charger.v1.ChargerService";
pub const SETTLEMENT_GRPC_NAME: &str = "autodebit.charger.v1.SettlementService";
pub const RECONCILIATION_GRPC_NAME: &str = "autodebit.charger.v1.ReconciliationService";
pub const COMPLAINTS_GRPC_NAME: &str = "autodebit.charger.v1.ComplaintsService";

/// The provider each merchant's charges go to: its own where configured, else the default.
pub struct Providers {
    default: Arc<dyn Provider>,
    by_merchant: HashMap<String, Arc<dyn Provider>>,
}

impl Providers {
    pub fn new(default: Arc<dyn Provider>) -> Self {
        Providers { default, by_merchant: HashMap::new() }
    }

    /// Sends `merchant`'s charges to `provider`.
    pub fn with_merchant(mut self, merchant: impl Into<String>, provider: Arc<dyn Provider>) -> Self {
        self.by_merchant.insert(merchant.into(), provider);
        self
    }

    pub fn for_merchant(&self, merchant: &str) -> &Arc<dyn Provider> {
        self.by_merchant.get(merchant).unwrap_or(&self.default)
    }
}

/// How the charger runs.
#[derive(Clone)]
pub struct ChargerConfig {
    pub simulator: SimulatorConfig,
    /// Merchants whose charges go to WeChat Pay, with their accounts (the others use the
    /// simulator).
    pub wechatpay: Vec<(String, Arc<autodebit_provider::wechatpay::WeChatPay>)>,
    /// Provider calls in flight at once.
    pub concurrency: usize,
    /// Provider calls in flight at once for one merchant.
    pub per_merchant_concurrency: usize,
    /// Provider calls per second at most (0: no limit; WeChat Pay allows 150 for deductions).
    pub provider_qps: u32,
    /// The working days settlement counts (China's by default).
    pub calendar: Arc<autodebit_domain::calendar::WorkingCalendar>,
    /// The operator key (empty: no operator), for the receipt pages.
    pub operator_key: String,
    /// Where payers reach the platform: receipt links start with it.
    pub public_url: String,
    /// Close settlement batches (and look at refund rates) on the charger's own timer.
    pub settlement_closer: bool,
    /// The simulator keeps a book of what it debited, to serve daily statements from.
    pub simulator_statements: bool,
    /// The simulator's statements disagree with the books in each of the ways reconciliation
    /// finds (a short payment, a status mismatch, a duplicate a day).
    pub statement_discrepancies: bool,
    /// The credit score every merchant starts with.
    pub initial_credit_score: i64,
}

impl Default for ChargerConfig {
    fn default() -> Self {
        ChargerConfig {
            simulator: SimulatorConfig::default(),
            wechatpay: Vec::new(),
            concurrency: 256,
            per_merchant_concurrency: 256,
            provider_qps: 0,
            calendar: Arc::new(autodebit_domain::calendar::WorkingCalendar::china()),
            operator_key: String::new(),
            public_url: String::new(),
            settlement_closer: true,
            simulator_statements: true,
            statement_discrepancies: false,
            initial_credit_score: autodebit_domain::credit::DEFAULT_INITIAL,
        }
    }
}

/// The charger's depths, counted from its tables.
const TABLE_GAUGES: &[TableGauge] = &[
    TableGauge::count(metrics::ATTEMPTS_IN_FLIGHT, "SELECT COUNT(*) FROM charger_attempts"),
    TableGauge::count(
        metrics::ATTEMPTS_OLDEST_STARTED,
        "SELECT COALESCE(MIN(started_unix_ms), 0) FROM charger_attempts",
    ),
    TableGauge::count(metrics::REFUNDS_IN_FLIGHT, "SELECT COUNT(*) FROM charger_refunds"),
];

/// Starts the service: the attempt starter, the attempts worker and the gRPC routes.
pub async fn start(platform: &Platform, config: ChargerConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    metrics::spawn_table_gauges(platform, TABLE_GAUGES);
    // Timed inside the limits: the call itself, not the wait for a slot.
    let limited = |p: Arc<dyn Provider>| -> Arc<dyn Provider> {
        let observed = observed::Observed(p);
        Arc::new(autodebit_provider::limit::Limited::new(
            observed,
            config.per_merchant_concurrency,
            config.provider_qps,
        ))
    };
    let mut simulator = Simulator::new(config.simulator.clone());
    if config.simulator_statements {
        simulator = simulator.keeping_statements(Arc::new(platform.clock.clone()), config.statement_discrepancies);
    }
    let mut providers = Providers::new(limited(Arc::new(simulator)));
    for (merchant, account) in &config.wechatpay {
        providers = providers.with_merchant(merchant.clone(), limited(account.clone()));
    }
    let providers = Arc::new(providers);
    worker::attempts::release_own_leases(platform).await?;
    let dispatch = worker::attempts::spawn(platform.clone(), providers.clone(), config.concurrency);
    spawn_follower(platform, processor::AttemptStarter::new(providers.clone(), platform.clock.clone(), dispatch));
    spawn_follower(platform, KeyFollower { name: "charger.keys", table: "charger_api_keys" });
    spawn_follower(
        platform,
        processor::ProviderNotices::new(providers.clone(), platform.store.clone(), platform.clock.clone()),
    );
    worker::refunds::spawn(platform.clone(), providers.clone());
    worker::shares::spawn(platform.clone(), providers.clone());
    spawn_follower(
        platform,
        settlement::SettlementFollower {
            calendar: config.calendar.clone(),
            initial_credit: config.initial_credit_score,
        },
    );
    let link_key = receipts::link_key(&platform.store).await?;
    if config.settlement_closer {
        settlement::spawn_closer(platform.clone(), config.calendar.clone(), providers.clone());
    }
    let routes = autodebit_runtime::grpc::routes_for(ChargerServiceServer::new(api::ChargerApi::new(platform.clone())))
        .merge(autodebit_runtime::grpc::routes_for(
            autodebit_proto::charger::v1::settlement_service_server::SettlementServiceServer::new(
                api::settlement::SettlementApi::new(platform.clone(), link_key.clone(), config.public_url.clone()),
            ),
        ))
        .merge(autodebit_runtime::grpc::routes_for(
            autodebit_proto::charger::v1::reconciliation_service_server::ReconciliationServiceServer::new(
                api::reconciliation::ReconciliationApi::new(platform.clone(), providers, config.calendar.clone()),
            )
            .max_decoding_message_size(api::reconciliation::MAX_STATEMENT_BYTES),
        ))
        .merge(autodebit_runtime::grpc::routes_for(
            autodebit_proto::charger::v1::complaints_service_server::ComplaintsServiceServer::new(
                api::complaints::ComplaintsApi::new(complaints::Complaints::new(platform.clone())),
            )
            // Five pieces of evidence of 2 MiB each, and the rest of the request.
            .max_decoding_message_size(12 * 1024 * 1024),
        ));
    let complaints = complaints::Complaints::new(platform.clone());
    let me = api::me::MeState {
        complaints: complaints.clone(),
        store: platform.store.clone(),
        links: autodebit_runtime::links::payer_page_key(&platform.store).await?,
        receipt_key: link_key.clone(),
    };
    let accounts = Arc::new(autodebit_provider::wechatpay::Accounts::new(&config.wechatpay));
    spawn_follower(platform, provider_complaints::AnswerBack { complaints, accounts: accounts.clone() });
    provider_complaints::spawn(platform.clone(), config.wechatpay.clone(), config.public_url.clone());
    let http = api::callbacks::routes(platform.clone(), accounts)
        .merge(receipts::routes(receipts::Pages {
            store: platform.store.clone(),
            auth: autodebit_runtime::auth::Authenticator::new(
                platform.store.clone(),
                &config.operator_key,
                "charger_api_keys",
            ),
            key: link_key,
        }))
        .merge(api::me::routes(me));
    Ok(Component {
        grpc_names: vec![GRPC_NAME, SETTLEMENT_GRPC_NAME, RECONCILIATION_GRPC_NAME, COMPLAINTS_GRPC_NAME],
        routes,
        http,
        key_table: "charger_api_keys",
    })
}
