//! The notifier service: tells payers what happened to their contracts and charges, on the
//! channels their merchant set up (WeChat mini-program and official account, SMS, or the process
//! log), and tells merchants through signed webhooks.
//!
//! - `api`: gRPC handlers (notices, settings and templates; webhooks) and the HTTP routes (short
//!   links, SMS receipts);
//! - `app`: what each event calls for, merchants' settings and templates, webhook endpoints;
//! - `channels`: the channel clients behind one trait;
//! - `processor`: the log follower that records notices and queues notices and webhooks;
//! - `worker`: the senders that work through those queues;
//! - `webhooks`: Standard Webhooks signing, endpoint URL rules, the sender, the retry schedule;
//! - `store`: the notifier's tables and their statements, and the migrations.

mod api;
pub mod app;
pub mod channels;
mod processor;
mod store;
pub mod webhooks;
mod worker;

pub use app::rebuild::rebuild_tables;
pub use store::MIGRATIONS;

use autodebit_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use autodebit_proto::notifier::v1::webhooks_service_server::WebhooksServiceServer;
use autodebit_runtime::auth::KeyFollower;
use autodebit_runtime::metrics::{self, TableGauge};
use autodebit_runtime::{Component, Platform, spawn_follower};
use std::sync::Arc;

pub const GRPC_NAME: &str = "autodebit.notifier.v1.NotifierService";
pub const WEBHOOKS_GRPC_NAME: &str = "autodebit.notifier.v1.WebhooksService";

/// WeChat's API host.
pub const WECHAT_API_URL: &str = "https://api.weixin.qq.com";
/// Tencent Cloud SMS's API host.
pub const TENCENT_SMS_URL: &str = "https://sms.tencentcloudapi.com";

/// How the notifier reaches payers and merchants.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Where payers reach the HTTP listener: short links start with it.
    pub public_url: String,
    /// WeChat's API, or a fake of it.
    pub wechat_api_url: String,
    /// Tencent Cloud SMS's API, or a fake of it.
    pub tencent_sms_url: String,
    /// The key webhook secrets derive from; `None`: one made once and kept in the database.
    pub webhook_key: Option<String>,
    /// Whether webhook endpoints may be `http://` on loopback (`autodebit run`).
    pub allow_loopback_webhooks: bool,
}

impl NotifierConfig {
    pub fn new(public_url: String) -> Self {
        NotifierConfig {
            public_url,
            wechat_api_url: WECHAT_API_URL.into(),
            tencent_sms_url: TENCENT_SMS_URL.into(),
            webhook_key: None,
            allow_loopback_webhooks: false,
        }
    }
}

/// The notifier's backlogs, counted from its tables.
const TABLE_GAUGES: &[TableGauge] = &[
    TableGauge::by(
        metrics::NOTICE_BACKLOG,
        "state",
        "SELECT state, COUNT(*) FROM notifier_outbox WHERE state IN ('pending', 'sending') GROUP BY state",
    ),
    TableGauge::by(
        metrics::WEBHOOK_BACKLOG,
        "state",
        "SELECT state, COUNT(*) FROM notifier_webhook_outbox WHERE state IN ('pending', 'sending') GROUP BY state",
    ),
];

/// Starts the service: the notice follower, the two senders, the gRPC and HTTP routes.
pub async fn start(platform: &Platform, config: NotifierConfig) -> anyhow::Result<Component> {
    platform.store.migrate(&store::MIGRATIONS).await?;
    metrics::spawn_table_gauges(platform, TABLE_GAUGES);
    let key = match &config.webhook_key {
        Some(k) => k.clone(),
        None => {
            store::webhook_key(
                &platform.store,
                &format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()),
            )
            .await?
        }
    };
    let hooks = app::webhooks::Webhooks::new(platform.clone(), key.into_bytes(), config.allow_loopback_webhooks);
    let queued = Arc::new(tokio::sync::Notify::new());
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("building the channels' HTTP client: {e}"))?;
    let channels = Arc::new(channels::Channels::standard(http, &config, platform.clock.clone()));
    spawn_follower(
        platform,
        processor::NoticeWriter::new(
            platform.clock.clone(),
            platform.store.clone(),
            config.public_url.trim_end_matches('/').to_string(),
            queued.clone(),
        ),
    );
    spawn_follower(platform, KeyFollower { name: "notifier.keys", table: "notifier_api_keys" });
    worker::notices::spawn(platform.clone(), channels, queued.clone());
    worker::webhooks::spawn(
        hooks.clone(),
        webhooks::send::WebhookSender::new(config.allow_loopback_webhooks)
            .map_err(|e| anyhow::anyhow!("building the webhook sender: {e}"))?,
        queued,
    );
    let routes = autodebit_runtime::grpc::routes_for(NotifierServiceServer::new(api::NotifierApi::new(
        platform.clone(),
        config.public_url.trim_end_matches('/').to_string(),
    )))
    .merge(autodebit_runtime::grpc::routes_for(WebhooksServiceServer::new(api::webhooks::WebhooksApi::new(hooks))));
    Ok(Component {
        grpc_names: vec![GRPC_NAME, WEBHOOKS_GRPC_NAME],
        routes,
        http: api::http::routes(api::http::Http {
            platform: platform.clone(),
            links: autodebit_runtime::links::payer_page_key(&platform.store).await?,
        }),
        key_table: "notifier_api_keys",
    })
}
