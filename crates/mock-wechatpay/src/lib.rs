//! A mock WeChat Pay for tests and local runs. It speaks the papay v2 endpoints
//! (`/pay/pappayapply`, `/pay/paporderquery`, `/pay/orderquery`, `/papay/querycontract`,
//! `/papay/deletecontract`, the daily statement `/pay/downloadbill`, the signing entries `/papay/entrustweb`, `/papay/h5entrustweb` and
//! `/papay/preentrustweb`) and the v3 ones the platform uses (`/v3/papay/contracts/{id}/notify`
//! and `…/fail-notify`, `/v3/refund/domestic/refunds`, the profit-sharing orders
//! `/v3/profitsharing/orders` and their query, the merchant complaints
//! `/v3/merchant-service/complaints-v2` and their notification URL, in `complaints`). Every v2 request's signature is checked
//! with the provider crate's `v2` code (verified against WeChat Pay's own worked example), every v3 request's
//! `Authorization` against the merchant's public key, and v3 answers are signed with a platform
//! key, as WeChat Pay signs them.
//!
//! It answers as WeChat Pay does. v2 answers and result notices are signed in the sign type of
//! the request and do not name it (no `sign_type`). `pappayapply` only accepts an order: it is
//! `ACCEPT` (deduction pending) for `deduct_after`, then `SUCCESS` or `PAY_FAIL` (with its
//! `err_code`, `NOTENOUGH` for a payer short of funds), and once decided the mock posts the
//! signed v2 deduction result notice to the order's `notify_url`. It also answers
//! `SYSTEMERROR` (the order may or may not have been taken: the caller must query, never
//! resend), `USERPAYING` (decided at the next query) and `ORDERPAID` for an `out_trade_no` used
//! before. Each `out_trade_no` is debited at most once; `GET /mock/orders` reports what it holds.
//!
//! Signing is instant here: an entry that verifies signs the contract at once (and posts the
//! signing callback to its `notify_url`). A contract the mock has not seen is taken as signed
//! when a deduction or notice names it; one terminated by `deletecontract` is gone.
//!
//! The v2 handlers (papay XML, MD5 and HMAC-SHA256 signatures) are in `v2`, the v3 ones (JSON,
//! RSA signatures, encrypted callbacks) in `v3`; what both hold (orders, contracts, refunds,
//! counters) and the callbacks they post are in `state`.
mod complaints;
mod state;
mod v2;
mod v3;

pub use v3::{sign_as_platform, v3_callback};

use autodebit_provider::wechatpay::v3::MerchantSigner;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use rsa::pkcs1v15::VerifyingKey;
use rsa::pkcs8::DecodePublicKey;
use state::Mock;
use std::sync::Arc;
use std::time::Duration;

/// The merchant API certificate serial of the test key pair in `testdata/`.
/// The APIv3 key the mock encrypts its notices' resources with, unless told another.
pub const API_V3_KEY: &str = "test-apiv3-key-0123456789abcdef0";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
/// The test merchant's API private key (PKCS#8 PEM): for clients pointed at the mock only.
pub const MERCHANT_PRIVATE_KEY_PEM: &str = include_str!("../testdata/merchant_test_key.pem");
pub const MERCHANT_PUBLIC_KEY_PEM: &str = include_str!("../testdata/merchant_test_pub.pem");
/// The id the mock's platform key goes by, as a WeChat Pay public key's id would.
pub const PLATFORM_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000001";
/// The public half of the key the mock signs v3 answers with: what a client verifies them with.
pub const PLATFORM_PUBLIC_KEY_PEM: &str = include_str!("../testdata/platform_test_pub.pem");
pub(crate) const PLATFORM_PRIVATE_KEY_PEM: &str = include_str!("../testdata/platform_test_key.pem");

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub appid: String,
    pub mch_id: String,
    /// The merchant's APIv2 key, shared with the client under test.
    pub api_key: String,
    pub seed: u64,
    /// Per 10,000 deductions: accepted, then failed (`PAY_FAIL`) for lack of funds.
    pub notenough_basis_points: u32,
    /// Per 10,000 deductions: answered `SYSTEMERROR`; half of those were taken all the same.
    pub systemerror_basis_points: u32,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            api_key: "192006250b4c09247ec02edce69f6a2d".into(),
            seed: 1,
            notenough_basis_points: 0,
            systemerror_basis_points: 0,
        }
    }
}

/// What the mock does beyond `MockConfig`. Kept apart so that code which names every field of
/// `MockConfig` goes on compiling; every field has a default.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Per 10,000 deductions: answered `USERPAYING`; the order is debited, and the first query
    /// still sees it `USERPAYING`.
    pub userpaying_basis_points: u32,
    /// The merchant certificate serial v3 requests must name (`serial_no`).
    pub merchant_serial: String,
    /// The merchant's public key (SubjectPublicKeyInfo PEM) that v3 requests must verify with.
    pub merchant_public_key_pem: String,
    /// The id v3 answers are signed under (`Wechatpay-Serial`).
    pub platform_key_id: String,
    /// The key v3 answers are signed with (PKCS#8 PEM).
    pub platform_private_key_pem: String,
    /// How many times a callback is posted before the mock gives up (at least once).
    pub callback_attempts: u32,
    pub callback_retry_delay: Duration,
    /// Answers carry a signature that does not verify (v2 `sign`, v3 `Wechatpay-Signature`):
    /// for tests that a client trusts nothing unverified.
    pub tamper_signatures: bool,
    /// How long an accepted deduction stays `ACCEPT` before it is decided.
    pub deduct_after: Duration,
    /// The merchant's APIv3 key, which v3 notices' resources are encrypted under.
    pub api_v3_key: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            userpaying_basis_points: 0,
            merchant_serial: MERCHANT_SERIAL.into(),
            merchant_public_key_pem: MERCHANT_PUBLIC_KEY_PEM.into(),
            platform_key_id: PLATFORM_KEY_ID.into(),
            platform_private_key_pem: PLATFORM_PRIVATE_KEY_PEM.into(),
            callback_attempts: 3,
            callback_retry_delay: Duration::from_millis(200),
            tamper_signatures: false,
            deduct_after: Duration::from_millis(100),
            api_v3_key: API_V3_KEY.into(),
        }
    }
}

/// The mock's routes.
pub fn router(config: MockConfig) -> Router {
    router_with(config, MockOptions::default())
}

/// The mock's routes, with the options beyond `MockConfig`.
pub fn router_with(config: MockConfig, options: MockOptions) -> Router {
    let platform =
        MerchantSigner::from_pem("", &options.platform_key_id, &options.platform_private_key_pem).ok().map(Arc::new);
    let merchant_key =
        rsa::RsaPublicKey::from_public_key_pem(&options.merchant_public_key_pem).ok().map(VerifyingKey::new);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
    let mock = Mock {
        config: Arc::new(config),
        options: Arc::new(options),
        book: Arc::default(),
        platform,
        merchant_key,
        http,
    };
    Router::new()
        .route("/pay/pappayapply", post(v2::pappayapply))
        .route("/pay/paporderquery", post(v2::orderquery))
        .route("/pay/orderquery", post(v2::orderquery))
        .route("/papay/querycontract", post(v2::querycontract))
        .route("/papay/deletecontract", post(v2::deletecontract))
        .route("/pay/downloadbill", post(v2::downloadbill))
        .route("/papay/entrustweb", get(v2::entrustweb))
        .route("/papay/h5entrustweb", get(v2::h5entrustweb))
        .route("/papay/preentrustweb", post(v2::preentrustweb))
        .route("/v3/papay/contracts/{contract_id}/notify", post(v3::notify))
        .route("/v3/papay/contracts/{contract_id}/fail-notify", post(v3::fail_notify))
        .route("/v3/refund/domestic/refunds", post(v3::refund))
        .route("/v3/profitsharing/orders", post(v3::profitsharing))
        .route("/v3/profitsharing/orders/{out_order_no}", get(v3::profitsharing_query))
        .route("/v3/merchant-service/complaints-v2", get(complaints::list))
        .route("/v3/merchant-service/complaints-v2/{complaint_id}", get(complaints::detail))
        .route("/v3/merchant-service/complaints-v2/{complaint_id}/response", post(complaints::respond))
        .route("/v3/merchant-service/complaints-v2/{complaint_id}/complete", post(complaints::complete))
        .route(
            "/v3/merchant-service/complaint-notifications",
            get(complaints::notifications)
                .post(complaints::notifications)
                .put(complaints::notifications)
                .delete(complaints::notifications),
        )
        .route("/mock/complaints", post(complaints::make).get(complaints::made))
        .route("/mock/orders", get(orders))
        .route("/mock/signed", get(v2::signed))
        .layer(axum::middleware::from_fn_with_state(mock.clone(), count))
        .with_state(mock)
}

/// Serves the mock on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}

/// Serves the mock, with the options beyond `MockConfig`, on `listener` until the task is dropped.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    config: MockConfig,
    options: MockOptions,
) -> std::io::Result<()> {
    axum::serve(listener, router_with(config, options)).await
}

/// Counts the requests to WeChat Pay's endpoints, so a test can tell that none was sent.
async fn count(State(mock): State<Mock>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !request.uri().path().starts_with("/mock/")
        && let Ok(mut book) = mock.book.lock()
    {
        book.requests += 1;
    }
    next.run(request).await
}

/// `GET /mock/orders`: what the mock holds and what it has seen, for tests to check.
async fn orders(State(mock): State<Mock>) -> axum::Json<serde_json::Value> {
    mock.settle_due();
    let Ok(book) = mock.book.lock() else { return axum::Json(serde_json::json!({"error": "mock state poisoned"})) };
    let debited = book.orders.values().filter(|o| o.trade_state == "SUCCESS").count();
    let reapplied: Vec<&String> = book.orders.iter().filter(|(_, o)| o.applications > 1).map(|(no, _)| no).collect();
    axum::Json(serde_json::json!({
        "orders": book.orders.len(),
        "debited": debited,
        "debited_fen": book.orders.values().filter(|o| o.trade_state == "SUCCESS").map(|o| o.total_fee).sum::<i64>(),
        "applied_more_than_once": reapplied,
        "debited_orders": book.orders.iter().filter(|(_, o)| o.trade_state == "SUCCESS").map(|(no, _)| no).collect::<Vec<_>>(),
        "refused_requests": book.refused,
        "v3_requests_without_serial": book.v3_without_serial,
        "requests": book.requests,
        "refunded_fen": book.orders.values().map(|o| o.refunded_fen).sum::<i64>(),
        "refunds": book.refunds.len(),
        "shared_fen": book.orders.values().map(|o| o.shared_fen).sum::<i64>(),
        "profit_sharing_orders": book.shares.len(),
        "notices": book.notices.len(),
        "contracts": book.contracts.len(),
        "terminated_contracts": book.contracts.values().filter(|c| c.state == "1").count(),
        "callbacks_delivered": book.callbacks_delivered,
        "callbacks_failed": book.callbacks_failed,
    }))
}
