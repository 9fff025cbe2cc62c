//! `TestApp`: the platform started in-process for one test, on a database of its own.
//!
//! The platform runs on a runtime of its own (so a test's runtime flavour and anything it
//! blocks on cannot stall it), listens on port 0 for gRPC and HTTP, and stops when the
//! `TestApp` drops; `restart` starts it again on the same database. Its options are the command
//! line's: `--test-clock`, `--decline-basis-points 0` and the rest parse exactly as
//! `autodebit run` parses them.
use super::{Backend, OPERATOR, wait_caught_up};
use autodebit::platform::{self, ListenArgs, PlatformArgs, Service};
use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use autodebit_proto::charger::v1::{
    charger_service_client::ChargerServiceClient, reconciliation_service_client::ReconciliationServiceClient,
    settlement_service_client::SettlementServiceClient,
};
use autodebit_proto::contracts::v1::{
    contracts_service_client::ContractsServiceClient, merchants_service_client::MerchantsServiceClient,
    plans_service_client::PlansServiceClient,
};
use autodebit_proto::notifier::v1::notifier_service_client::NotifierServiceClient;
use autodebit_proto::notifier::v1::webhooks_service_client::WebhooksServiceClient;
use autodebit_proto::scheduler::v1::scheduler_service_client::SchedulerServiceClient;
use clap::Parser;
use std::net::SocketAddr;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The platform's options as `autodebit run` takes them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    options: PlatformArgs,
}

/// Puts `authorization: Bearer KEY` on every call that does not carry one already.
#[derive(Clone)]
pub struct Key(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0
            && !req.metadata().contains_key("authorization")
        {
            req.metadata_mut().insert("authorization", key.clone());
        }
        Ok(req)
    }
}

/// A channel to the platform that authenticates as one caller.
pub type Keyed = InterceptedService<Channel, Key>;

/// A started platform; stops when dropped.
pub struct TestApp {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    channel: Channel,
    /// What it was started with, for a restart.
    url: String,
    services: Vec<Service>,
    args: Vec<String>,
    /// The log's database (the SQLite file, read-only, or the PostgreSQL database).
    database: String,
    shutdown: autodebit_runtime::Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
    /// Where the SQLite file is (kept across a restart).
    dir: std::sync::Arc<tempfile::TempDir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What to start: the backend, the services, the options.
pub struct Builder {
    backend: Backend,
    services: Vec<Service>,
    args: Vec<String>,
}

impl Builder {
    /// On PostgreSQL (a fresh database) instead of SQLite.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Only these services (default: all five, as `autodebit run`).
    pub fn services(mut self, services: &[Service]) -> Self {
        self.services = services.to_vec();
        self
    }

    /// Options as `autodebit run` takes them (`--test-clock`, `--charge-window 00:00-24:00`, …).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the platform; it stops when the `TestApp` drops.
    pub async fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = match self.backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("autodebit.db").display()),
            Backend::Postgres => autodebit_eventstore::testing::fresh_postgres_url().await,
        };
        let http = "127.0.0.1:0".parse().unwrap();
        TestApp::start(url, self.services, self.args, http, std::sync::Arc::new(dir)).await
    }
}

impl TestApp {
    /// Starts `services` on the log at `url` with `args`, HTTP at `http`.
    async fn start(
        url: String,
        services: Vec<Service>,
        args: Vec<String>,
        http: SocketAddr,
        dir: std::sync::Arc<tempfile::TempDir>,
    ) -> TestApp {
        let database = if url.starts_with("sqlite:") { format!("{url}?mode=ro") } else { url.clone() };
        let argv = ["autodebit", "--operator-key", OPERATOR].into_iter().map(String::from).chain(args.clone());
        let options = Flags::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).options;
        let listen = ListenArgs { grpc_addr: "127.0.0.1:0".parse().unwrap(), http_addr: http };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("platform")
            .enable_all()
            .build()
            .expect("the platform's runtime");
        // Started from a thread of its own on the platform's runtime (whose workers run what it
        // spawns): `start`'s future is not `Send`, so it cannot be a task itself.
        let handle = runtime.handle().clone();
        let (start_url, start_services) = (url.clone(), services.clone());
        let running = tokio::task::spawn_blocking(move || {
            handle.block_on(platform::start(&start_url, &start_services, &listen, &options))
        })
        .await
        .expect("the platform's start did not panic")
        .unwrap_or_else(|e| panic!("the platform did not start: {e:#}"));
        let (grpc, http) = (running.grpc_addr, running.http_addr);
        let shutdown = running.platform.shutdown.clone();
        // The listeners and followers run on as tasks of the platform's runtime.
        drop(running);
        let channel = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.expect("connect to gRPC");
        TestApp { grpc, http, channel, url, services, args, database, shutdown, runtime: Some(runtime), dir }
    }

    /// Stops the platform and starts it again on the same database and HTTP address (the
    /// address callbacks are sent to), with `extra` options added to those it had.
    pub async fn restart(mut self, extra: &[&str]) -> TestApp {
        self.shutdown.trigger();
        let runtime = self.runtime.take().expect("a running platform");
        // Waits for its tasks to end, so its listeners are closed before the new ones bind.
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(std::time::Duration::from_secs(10)))
            .await
            .unwrap();
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        TestApp::start(self.url.clone(), self.services.clone(), args, self.http, self.dir.clone()).await
    }
}

/// A typed client per service: `name()` calls as the operator, `name_as(key)` as the holder of
/// `key` (a request that carries its own key keeps it).
macro_rules! clients {
    ($($name:ident, $name_as:ident: $client:ident;)*) => {
        $(
            pub fn $name(&self) -> $client<Keyed> {
                self.$name_as(OPERATOR)
            }

            pub fn $name_as(&self, key: &str) -> $client<Keyed> {
                $client::with_interceptor(self.channel.clone(), self.key(Some(key)))
            }
        )*
    };
}

impl TestApp {
    /// All five services on SQLite, with the command line's defaults.
    pub fn builder() -> Builder {
        Builder { backend: Backend::Sqlite, services: Service::all().to_vec(), args: Vec::new() }
    }

    /// All five services on SQLite with these options.
    pub async fn spawn(args: &[&str]) -> TestApp {
        TestApp::builder().args(args).spawn().await
    }

    /// All five services on `backend` with these options.
    pub async fn spawn_on(backend: Backend, args: &[&str]) -> TestApp {
        TestApp::builder().backend(backend).args(args).spawn().await
    }

    /// Where its log is: a read-only SQLite URL, or the PostgreSQL database's URL.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The key operator calls authenticate with.
    pub fn operator_key(&self) -> &'static str {
        OPERATOR
    }

    /// A plain channel: calls carry whatever key their request carries.
    pub async fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn key(&self, key: Option<&str>) -> Key {
        Key(key.map(|k| MetadataValue::try_from(format!("Bearer {k}")).expect("a key fit for a header")))
    }

    clients! {
        contracts, contracts_as: ContractsServiceClient;
        merchants, merchants_as: MerchantsServiceClient;
        plans, plans_as: PlansServiceClient;
        scheduler, scheduler_as: SchedulerServiceClient;
        charger, charger_as: ChargerServiceClient;
        settlement, settlement_as: SettlementServiceClient;
        reconciliation, reconciliation_as: ReconciliationServiceClient;
        notifier, notifier_as: NotifierServiceClient;
        webhooks, webhooks_as: WebhooksServiceClient;
        analytics, analytics_as: AnalyticsServiceClient;
        admin, admin_as: AdminServiceClient;
    }

    /// Moves the test clock `days` days on (needs `--test-clock`).
    pub async fn advance(&self, days: i64) {
        self.advance_seconds(days * 86_400).await;
    }

    /// Moves the test clock `seconds` seconds on (needs `--test-clock`).
    pub async fn advance_seconds(&self, seconds: i64) {
        self.admin().advance_clock(AdvanceClockRequest { seconds }).await.expect("AdvanceClock");
    }

    /// Waits until every follower has taken in the whole log (see `Process::caught_up`).
    pub async fn caught_up(&self) {
        wait_caught_up(&self.database, self.services.len() == Service::all().len()).await;
    }

    /// Waits until the scheduler's due loop has taken every timer due now, then until every
    /// follower has caught up: nothing the clock's present time calls for is still to happen.
    pub async fn settled(&self) {
        crate::scenario::scheduler_idle(&self.channel).await;
        self.caught_up().await;
    }
}
