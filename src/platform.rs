//! Starting the platform: the store, the clock, the chosen services and their listeners.
use anyhow::Context;
use autodebit_charger::{ChargerConfig, SimulatorConfig};
use autodebit_eventstore::{EventStore, StoreOptions};
use autodebit_runtime::{Component, Platform, PlatformClock, Shutdown};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Contracts,
    Scheduler,
    Charger,
    Notifier,
    Analytics,
}

impl Service {
    pub fn all() -> [Service; 5] {
        [Service::Contracts, Service::Scheduler, Service::Charger, Service::Notifier, Service::Analytics]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Service::Contracts => "contracts",
            Service::Scheduler => "scheduler",
            Service::Charger => "charger",
            Service::Notifier => "notifier",
            Service::Analytics => "analytics",
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address: health, readiness, metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
}

#[derive(Args, Clone, Debug)]
pub struct PlatformArgs {
    /// Run on a test clock kept in the database, moved by the admin AdvanceClock RPC.
    #[arg(long)]
    pub test_clock: bool,
    /// Seed of the simulator provider.
    #[arg(long, default_value_t = 1)]
    pub simulator_seed: u64,
    /// Simulator declines per 10,000 charges.
    #[arg(long, default_value_t = 500)]
    pub decline_basis_points: u32,
    /// Of the simulator's declines, how many per 10,000 are hard (not retried).
    #[arg(long, default_value_t = 0)]
    pub hard_decline_basis_points: u32,
    /// Simulator deductions per 10,000 answered ambiguously (settled by query).
    #[arg(long, default_value_t = 0)]
    pub transient_basis_points: u32,
    /// Median time a simulator call takes, in milliseconds (0: at once).
    #[arg(long, default_value_t = 0)]
    pub simulator_latency_ms: u64,
    /// 99th percentile of the time a simulator call takes, in milliseconds (log-normal between).
    #[arg(long, default_value_t = 0)]
    pub simulator_latency_p99_ms: u64,
    /// Provider calls in flight at once, all merchants together.
    #[arg(long, default_value_t = 1024)]
    pub charger_concurrency: usize,
    /// Provider calls in flight at once for one merchant.
    #[arg(long, default_value_t = 256)]
    pub merchant_concurrency: usize,
    /// Merchants whose charges go to WeChat Pay, and how to reach it: a JSON file (see the
    /// README, "Pointing a merchant at WeChat Pay"). Other merchants use the simulator.
    #[arg(long)]
    pub wechatpay_config: Option<std::path::PathBuf>,
    /// Provider calls per second at most, 0 for no limit (WeChat Pay allows 150 for deductions).
    #[arg(long, default_value_t = 0)]
    pub provider_qps: u32,
    /// The key operator calls (merchant reviews, imports, the test clock) authenticate with.
    /// When absent a random one is made and written to a file only its owner can read (the
    /// file's path is logged; the key never is).
    #[arg(long, env = "AUTODEBIT_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// The address payers reach the HTTP listener at (authorization page URLs start with it);
    /// default: the HTTP listener's own address.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Calls in flight at once; past it a call waits up to 2 s, then is answered
    /// RESOURCE_EXHAUSTED. 0: half the PostgreSQL pool, or 64 on SQLite.
    #[arg(long, default_value_t = 0)]
    pub max_in_flight: usize,
    /// How long a signing session stays open.
    #[arg(long, default_value_t = autodebit_domain::signing::DEFAULT_SESSION_MINUTES)]
    pub signing_session_minutes: u64,
    /// The hours (HH:MM-HH:MM, Beijing time) in which pre-debit notices, cycle and usage
    /// charges and retries go out; what falls due outside waits for the window to open.
    /// `00:00-24:00` lifts the restriction.
    #[arg(long, default_value = "07:00-22:00")]
    pub charge_window: String,
    /// WeChat's API, where notices to WeChat go (a fake's address in tests).
    #[arg(long, default_value = autodebit_notifier::WECHAT_API_URL)]
    pub wechat_api_url: String,
    /// Tencent Cloud SMS's API, where SMS notices go (a fake's address in tests).
    #[arg(long, default_value = autodebit_notifier::TENCENT_SMS_URL)]
    pub tencent_sms_url: String,
    /// The key merchants' webhook secrets derive from. When absent, one is made on first start
    /// and kept in the database, so every replica signs alike.
    #[arg(long, env = "AUTODEBIT_WEBHOOK_KEY", hide_env_values = true)]
    pub webhook_key: Option<String>,
    /// Connections to PostgreSQL in the process's pool (each follower's lease, and the listener
    /// for new commits, hold one more each, outside it). Every replica of every service opens
    /// its own: keep their sum under the server's `max_connections` (deploy/README.md).
    #[arg(long, env = "AUTODEBIT_DB_POOL", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    pub db_pool: u32,
    /// Serve gRPC over TLS with this certificate chain (PEM file); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM file, PKCS#8, SEC1 or PKCS#1) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require every gRPC client to present a certificate issued by this CA (PEM file):
    /// mutual TLS. Needs `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Accept webhook endpoints on `http://` loopback addresses (always on under `run`).
    #[arg(long)]
    pub allow_loopback_webhooks: bool,
    /// Settlement's working days: a file of `year`, `rest FIRST [LAST]` and `work DAY` lines
    /// (the form of the shipped `crates/domain/data/cn-working-calendar.txt`), replacing China's.
    #[arg(long)]
    pub holiday_calendar: Option<std::path::PathBuf>,
    /// Whether the charger closes settlement batches on its own timer (the demo closes each
    /// day's itself, once the day's charges have ended).
    #[arg(skip = true)]
    pub settlement_closer: bool,
    /// Whether the simulator keeps a book of its debits to serve daily statements from (off in
    /// throughput benchmarks, whose millions of charges it would hold in memory).
    #[arg(skip = true)]
    pub simulator_statements: bool,
    /// Whether the simulator's statements disagree with the books (`demo --discrepancies`).
    #[arg(skip)]
    pub statement_discrepancies: bool,
    /// The credit score every merchant starts with (complaints, missed deadlines and refund
    /// rates move it; below 60 no signings, below 40 no charges).
    #[arg(long, default_value_t = autodebit_domain::credit::DEFAULT_INITIAL,
          value_parser = clap::value_parser!(i64).range(autodebit_domain::credit::SIGNING_REFUSED_BELOW..=autodebit_domain::credit::MAX))]
    pub initial_credit_score: i64,
    #[command(flatten)]
    pub contracts: ContractsArgs,
}

/// Rules of the contracts service an operator can tighten or loosen.
#[derive(Args, Clone, Debug)]
pub struct ContractsArgs {
    /// Industries that may apply (comma-separated); default: the built-in admission list.
    #[arg(long, value_delimiter = ',')]
    pub admitted_industries: Vec<String>,
    /// Industries that need a special filing before approval; default: finance, medical.
    #[arg(long, value_delimiter = ',')]
    pub high_risk_industries: Vec<String>,
    /// Industries reviewed in 7–15 working days; default: finance, medical, education, insurance.
    #[arg(long, value_delimiter = ',')]
    pub sensitive_industries: Vec<String>,
    /// Days without a successful charge after which a contract is flagged as unused.
    #[arg(long, default_value_t = autodebit_domain::zombie::IDLE_AFTER_DAYS)]
    pub zombie_after_days: u64,
    /// Days after that notice before an unused contract is terminated.
    #[arg(long, default_value_t = autodebit_domain::zombie::NOTICE_PERIOD_DAYS)]
    pub zombie_notice_days: u64,
    /// A file of `CIDR,region` lines (IPv4 or IPv6) for the sign-time region check; default: a built-in table
    /// of the documentation address blocks.
    #[arg(long)]
    pub region_table: Option<std::path::PathBuf>,
}

impl Default for ContractsArgs {
    /// The same defaults as the command line's.
    fn default() -> Self {
        ContractsArgs {
            admitted_industries: vec![],
            high_risk_industries: vec![],
            sensitive_industries: vec![],
            zombie_after_days: autodebit_domain::zombie::IDLE_AFTER_DAYS,
            zombie_notice_days: autodebit_domain::zombie::NOTICE_PERIOD_DAYS,
            region_table: None,
        }
    }
}

impl ContractsArgs {
    fn config(&self, public_url: String, session_minutes: u64) -> anyhow::Result<autodebit_contracts::ContractsConfig> {
        let mut industries = autodebit_domain::merchant::IndustryPolicy::default();
        if !self.admitted_industries.is_empty() {
            industries.admitted = self.admitted_industries.clone();
        }
        if !self.high_risk_industries.is_empty() {
            industries.high_risk = self.high_risk_industries.clone();
        }
        if !self.sensitive_industries.is_empty() {
            industries.sensitive = self.sensitive_industries.clone();
        }
        let regions = match &self.region_table {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --region-table {}", path.display()))?;
                autodebit_contracts::regions::RegionTable::parse(&text)
                    .map_err(|e| anyhow::anyhow!("--region-table {}: {e}", path.display()))?
            }
            None => autodebit_contracts::regions::RegionTable::built_in(),
        };
        let day = 86_400;
        Ok(autodebit_contracts::ContractsConfig {
            industries,
            zombies: autodebit_contracts::ZombiePolicy {
                idle_after: std::time::Duration::from_secs(self.zombie_after_days * day),
                notice_period: std::time::Duration::from_secs(self.zombie_notice_days * day),
            },
            public_url,
            session_ttl: std::time::Duration::from_secs(session_minutes * 60),
            regions: std::sync::Arc::new(regions),
            wechatpay: Vec::new(),
        })
    }
}

/// The file a command-line flag names, read whole; an error names the flag and the file.
pub fn read_flag_file(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}

impl PlatformArgs {
    /// The operator key. When none was given one is made up and written to `dir/operator-key`
    /// (mode 0600), whose path is logged: the key itself never reaches a log.
    /// The gRPC listener's TLS, from `--tls-cert`, `--tls-key` and `--tls-client-ca`; none
    /// without `--tls-cert`. A file that cannot be read is named with its flag.
    pub fn grpc_tls(&self) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let read = read_flag_file;
        let identity = tonic::transport::Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read("--tls-client-ca", ca)?));
        }
        Ok(Some(tls))
    }

    pub fn operator_key(&self, dir: &std::path::Path) -> anyhow::Result<String> {
        if let Some(key) = &self.operator_key {
            return Ok(key.clone());
        }
        let key = format!("op_{}", uuid::Uuid::new_v4().simple());
        let path = dir.join("operator-key");
        write_secret(&path, &key).with_context(|| format!("writing the operator key to {}", path.display()))?;
        tracing::warn!(path = %path.display(), "no --operator-key given; generated one for this run and wrote it to this file");
        Ok(key)
    }

    pub fn charger(&self) -> anyhow::Result<ChargerConfig> {
        Ok(ChargerConfig {
            wechatpay: Vec::new(),
            simulator: SimulatorConfig {
                seed: self.simulator_seed,
                decline_basis_points: self.decline_basis_points,
                hard_decline_basis_points: self.hard_decline_basis_points,
                transient_basis_points: self.transient_basis_points,
                latency_median: std::time::Duration::from_millis(self.simulator_latency_ms),
                latency_p99: std::time::Duration::from_millis(self.simulator_latency_p99_ms),
            },
            concurrency: self.charger_concurrency,
            per_merchant_concurrency: self.merchant_concurrency,
            provider_qps: self.provider_qps,
            operator_key: String::new(),
            public_url: String::new(),
            settlement_closer: self.settlement_closer,
            simulator_statements: self.simulator_statements,
            statement_discrepancies: self.statement_discrepancies,
            initial_credit_score: self.initial_credit_score,
            calendar: std::sync::Arc::new(match &self.holiday_calendar {
                None => autodebit_domain::calendar::WorkingCalendar::china(),
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--holiday-calendar: cannot read {}", path.display()))?;
                    autodebit_domain::calendar::WorkingCalendar::parse(&text)
                        .map_err(|e| anyhow::anyhow!("--holiday-calendar {}: {e}", path.display()))?
                }
            }),
        })
    }
}

/// Where a generated operator key is written: beside the SQLite file, or the temporary
/// directory for a database elsewhere.
fn secrets_dir(url: &str) -> std::path::PathBuf {
    url.strip_prefix("sqlite://")
        .and_then(|path| std::path::Path::new(path).parent())
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.to_path_buf())
        .unwrap_or_else(std::env::temp_dir)
}

/// Writes `secret` to `path`, readable and writable by its owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")
}

/// How long in-flight calls may run on after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A started platform.
pub struct Running {
    pub platform: Platform,
    /// The database the analytics tables are in (on SQLite a file of their own).
    pub tables: EventStore,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops everything and waits for the listeners to close.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.platform.shutdown.trigger();
        self.wait().await
    }

    /// Waits for the listeners to close. Once shutdown is triggered, in-flight calls get
    /// `SHUTDOWN_GRACE` to finish; connections that clients keep open past that are dropped.
    pub async fn wait(self) -> anyhow::Result<()> {
        let shutdown = self.platform.shutdown.clone();
        let all = futures::future::try_join_all(self.tasks);
        tokio::pin!(all);
        let results = tokio::select! {
            r = &mut all => r?,
            _ = async { shutdown.wait().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
                return Ok(());
            }
        };
        results.into_iter().collect()
    }
}

pub async fn start(
    url: &str,
    services: &[Service],
    listen: &ListenArgs,
    options: &PlatformArgs,
) -> anyhow::Result<Running> {
    let store = EventStore::open(StoreOptions { max_connections: options.db_pool, ..StoreOptions::new(url) }).await?;
    let shutdown = Shutdown::new();
    let clock =
        if options.test_clock { PlatformClock::test(&store, &shutdown).await? } else { PlatformClock::system() };
    let platform = Platform { store, clock, shutdown };
    let grpc = tokio::net::TcpListener::bind(listen.grpc_addr).await?;
    let http = tokio::net::TcpListener::bind(listen.http_addr).await?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let public_url = options.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));
    let operator_key = options.operator_key(&secrets_dir(url))?;
    let tls = options.grpc_tls()?;
    let window = autodebit_domain::window::DailyWindow::parse(&options.charge_window, chrono_tz::Asia::Shanghai)
        .map_err(|e| anyhow::anyhow!("--charge-window {e}"))?;
    // Merchants that sign and charge through WeChat Pay: the contracts service offers WeChat
    // Pay's signing entry and takes its signing notices, the charger charges there.
    let wechatpay = match &options.wechatpay_config {
        Some(path) => crate::wechatpay_config::load(path)?,
        None => Vec::new(),
    };
    let mut components: Vec<Component> = Vec::new();
    // Where the analytics tables are (the log's database unless analytics keeps its own).
    let mut tables = platform.store.clone();
    for s in services {
        components.push(match s {
            Service::Contracts => {
                let config = options.contracts.config(public_url.clone(), options.signing_session_minutes)?;
                let config = autodebit_contracts::ContractsConfig { wechatpay: wechatpay.clone(), ..config };
                autodebit_contracts::start(&platform, config).await?
            }
            Service::Scheduler => {
                let config = autodebit_scheduler::SchedulerConfig { window };
                autodebit_scheduler::start(&platform, config).await?
            }
            Service::Charger => {
                let config = autodebit_charger::ChargerConfig {
                    wechatpay: wechatpay.clone(),
                    operator_key: operator_key.clone(),
                    public_url: public_url.clone(),
                    ..options.charger()?
                };
                autodebit_charger::start(&platform, config).await?
            }
            Service::Notifier => {
                let config = autodebit_notifier::NotifierConfig {
                    wechat_api_url: options.wechat_api_url.clone(),
                    tencent_sms_url: options.tencent_sms_url.clone(),
                    webhook_key: options.webhook_key.clone(),
                    allow_loopback_webhooks: options.allow_loopback_webhooks,
                    ..autodebit_notifier::NotifierConfig::new(public_url.clone())
                };
                autodebit_notifier::start(&platform, config).await?
            }
            Service::Analytics => {
                let config = autodebit_analytics::AnalyticsConfig {
                    operator_key: operator_key.clone(),
                    public_url: public_url.clone(),
                };
                let stores = autodebit_analytics::Stores::beside(platform.store.clone(), url).await?;
                tables = stores.tables.clone();
                autodebit_analytics::start(&platform, stores, config).await?
            }
        });
    }
    let pages = components.iter().fold(axum::Router::new(), |r, c| r.merge(c.http.clone()));
    let max_in_flight = match options.max_in_flight {
        0 => autodebit_runtime::grpc::default_max_in_flight(&platform.store),
        n => n,
    };
    let tasks = vec![
        tokio::spawn({
            let p = platform.clone();
            async move { autodebit_runtime::grpc::serve(grpc, &p, components, &operator_key, max_in_flight, tls).await }
        }),
        tokio::spawn({
            let p = platform.clone();
            async move { autodebit_runtime::http::serve(http, &p, pages).await }
        }),
    ];
    Ok(Running { platform, tables, grpc_addr, http_addr, tasks })
}

/// `run` and `serve`: start, say where we listen, serve until SIGTERM.
pub async fn run_until_stopped(
    url: &str,
    services: &[Service],
    listen: ListenArgs,
    options: PlatformArgs,
) -> anyhow::Result<()> {
    let running = start(url, services, &listen, &options).await?;
    running.platform.shutdown.listen_for_signals();
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    println!("autodebit listening grpc={} http={} services={}", running.grpc_addr, running.http_addr, names.join(","));
    tracing::info!(
        grpc = %running.grpc_addr,
        http = %running.http_addr,
        services = names.join(","),
        test_clock = options.test_clock,
        "autodebit started"
    );
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}
