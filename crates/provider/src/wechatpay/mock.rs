//! A mock WeChat Pay for tests and local runs. It speaks the papay v2 endpoints
//! (`/pay/pappayapply`, `/pay/paporderquery`, `/pay/orderquery`, `/papay/querycontract`,
//! `/papay/deletecontract`, the signing entries `/papay/entrustweb`, `/papay/h5entrustweb` and
//! `/papay/preentrustweb`) and the v3 ones the platform uses (`/v3/papay/contracts/{id}/notify`
//! and `…/fail-notify`, `/v3/refund/domestic/refunds`). Every v2 request's signature is checked
//! with the code of `v2` (verified against WeChat Pay's own worked example), every v3 request's
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
use super::v2::{self, Params, SignType};
use super::v3::{self, MerchantSigner};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The merchant API certificate serial of the test key pair in `testdata/`.
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
/// The test merchant's API private key (PKCS#8 PEM): for clients pointed at the mock only.
pub const MERCHANT_PRIVATE_KEY_PEM: &str = include_str!("testdata/merchant_test_key.pem");
pub const MERCHANT_PUBLIC_KEY_PEM: &str = include_str!("testdata/merchant_test_pub.pem");
/// The id the mock's platform key goes by, as a WeChat Pay public key's id would.
pub const PLATFORM_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000001";
/// The public half of the key the mock signs v3 answers with: what a client verifies them with.
pub const PLATFORM_PUBLIC_KEY_PEM: &str = include_str!("testdata/platform_test_pub.pem");
const PLATFORM_PRIVATE_KEY_PEM: &str = include_str!("testdata/platform_test_key.pem");

/// `message` signed with the mock's platform key, as WeChat Pay signs answers and callbacks.
pub fn sign_as_platform(message: &str) -> String {
    super::v3::MerchantSigner::from_pem("wechatpay", PLATFORM_KEY_ID, PLATFORM_PRIVATE_KEY_PEM)
        .expect("the mock's platform key reads")
        .sign(message)
}

/// A v3 callback as WeChat Pay sends it: the `Wechatpay-*` headers, signed with the mock's
/// platform key (`PLATFORM_KEY_ID`) at `timestamp` with `nonce`, and the JSON envelope whose
/// resource is `resource` encrypted under `api_v3_key`.
pub fn v3_callback(
    event_type: &str,
    resource: &serde_json::Value,
    api_v3_key: &str,
    timestamp: i64,
    nonce: &str,
) -> (Vec<(&'static str, String)>, String) {
    let resource_nonce = format!("{:012}", roll(timestamp as u64, nonce) % 1_000_000_000_000);
    let ciphertext = super::v3::encrypt_resource(api_v3_key, &resource_nonce, "transaction", &resource.to_string())
        .unwrap_or_default();
    let body = serde_json::json!({
        "id": format!("EV-{nonce}"),
        "create_time": beijing_time(timestamp),
        "event_type": event_type,
        "resource_type": "encrypt-resource",
        "summary": "",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                     "associated_data": "transaction", "nonce": resource_nonce},
    })
    .to_string();
    let signature = sign_as_platform(&super::v3::response_message(timestamp, nonce, &body));
    let headers = vec![
        ("Wechatpay-Serial", PLATFORM_KEY_ID.to_string()),
        ("Wechatpay-Timestamp", timestamp.to_string()),
        ("Wechatpay-Nonce", nonce.to_string()),
        ("Wechatpay-Signature", signature),
    ];
    (headers, body)
}

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    contract_id: String,
    total_fee: i64,
    /// `ACCEPT` until `decided_at`, `USERPAYING` until the next query; then `outcome`.
    trade_state: &'static str,
    /// What the order comes to: `SUCCESS` (debited) or `PAY_FAIL`.
    outcome: &'static str,
    decided_at: std::time::Instant,
    /// Why it failed, for `PAY_FAIL`.
    err_code: &'static str,
    transaction_id: String,
    /// How many `pappayapply` calls named it.
    applications: u32,
    notify_url: String,
    sign_type: SignType,
    refunded_fen: i64,
}

impl Order {
    /// Moves an accepted order to its outcome once its time has come; whether it moved.
    fn settle(&mut self, now: std::time::Instant) -> bool {
        let due = self.trade_state == "ACCEPT" && now >= self.decided_at;
        if due {
            self.trade_state = self.outcome;
        }
        due
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Contract {
    plan_id: String,
    contract_code: String,
    display_account: String,
    request_serial: String,
    /// "0" signed, "1" terminated.
    state: &'static str,
    terminated_time: String,
    termination_remark: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Refund {
    refund_id: String,
    out_trade_no: String,
    amount: i64,
}

#[derive(Default)]
struct Book {
    orders: HashMap<String, Order>,
    contracts: HashMap<String, Contract>,
    /// The notice each contract was given in this cycle, as (amount, days).
    notices: HashMap<String, (i64, i64)>,
    refunds: HashMap<String, Refund>,
    /// Requests refused for a bad signature or a missing parameter.
    refused: u64,
    /// v3 requests that named no `Wechatpay-Serial`.
    v3_without_serial: u64,
    /// Every request to a WeChat Pay endpoint (not `/mock/…`).
    requests: u64,
    callbacks_delivered: u64,
    callbacks_failed: u64,
}

#[derive(Clone)]
struct Mock {
    config: Arc<MockConfig>,
    options: Arc<MockOptions>,
    book: Arc<Mutex<Book>>,
    /// Signs v3 answers; `None` when the configured key cannot be read (v3 calls then fail).
    platform: Option<Arc<MerchantSigner>>,
    merchant_key: Option<VerifyingKey<sha2::Sha256>>,
    http: reqwest::Client,
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
        .route("/pay/pappayapply", post(pappayapply))
        .route("/pay/paporderquery", post(orderquery))
        .route("/pay/orderquery", post(orderquery))
        .route("/papay/querycontract", post(querycontract))
        .route("/papay/deletecontract", post(deletecontract))
        .route("/papay/entrustweb", get(entrustweb))
        .route("/papay/h5entrustweb", get(h5entrustweb))
        .route("/papay/preentrustweb", post(preentrustweb))
        .route("/v3/papay/contracts/{contract_id}/notify", post(notify))
        .route("/v3/papay/contracts/{contract_id}/fail-notify", post(fail_notify))
        .route("/v3/refund/domestic/refunds", post(refund))
        .route("/mock/orders", get(orders))
        .route("/mock/signed", get(signed))
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

fn roll(seed: u64, key: &str) -> u64 {
    // FNV-1a, then a mix: deterministic per seed and order number.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `yyyyMMddHHmmss` in Beijing time, as WeChat Pay writes `time_end`.
fn beijing_time(secs: i64) -> String {
    let secs = secs + 8 * 3600;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Mock {
    /// A signed answer in the sign type of the request.
    fn answer(&self, mut p: Params, sign_type: SignType) -> String {
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), format!("{:016x}", roll(self.config.seed, &format!("{p:?}"))));
        self.sign(&mut p, sign_type);
        v2::to_xml(&p)
    }

    /// Signs an answer or a notice as WeChat Pay does: in `sign_type`, without naming it.
    fn sign(&self, p: &mut Params, sign_type: SignType) {
        v2::sign_answer(p, &self.config.api_key, sign_type);
        if self.options.tamper_signatures
            && let Some(sign) = p.get_mut("sign")
        {
            // Flip the first hex digit: the same length, a different value.
            let flipped = if sign.starts_with('0') { "1" } else { "0" };
            sign.replace_range(0..1, flipped);
        }
    }

    /// `return_code` FAIL: the request itself was not acceptable (not signed in reply).
    fn refuse(&self, message: String) -> String {
        if let Ok(mut book) = self.book.lock() {
            book.refused += 1;
        }
        let p: Params = [("return_code".to_string(), "FAIL".to_string()), ("return_msg".to_string(), message)]
            .into_iter()
            .collect();
        v2::to_xml(&p)
    }

    /// The request's parameters once its XML, signature, merchant and required fields hold.
    fn accept(&self, body: &str, required: &[&'static str]) -> Result<(Params, SignType), String> {
        self.accept_params(v2::from_xml(body).map_err(|e| e.to_string())?, required)
    }

    fn accept_params(&self, p: Params, required: &[&'static str]) -> Result<(Params, SignType), String> {
        let sign_type = SignType::of(&p).map_err(|e| e.to_string())?;
        v2::verify(&p, &self.config.api_key, sign_type).map_err(|e| format!("SIGNERROR: {e}"))?;
        v2::require(&p, required).map_err(|e| e.to_string())?;
        if p.get("mch_id") != Some(&self.config.mch_id) || p.get("appid") != Some(&self.config.appid) {
            return Err("appid and mch_id do not match".into());
        }
        Ok((p, sign_type))
    }

    /// The WeChat Pay id of a contract signed now (the same template and code: the same contract).
    fn sign_contract(&self, p: &Params) -> String {
        let (plan_id, code) = (p["plan_id"].clone(), p["contract_code"].clone());
        let contract_id = format!("2{:017}", roll(self.config.seed, &format!("{plan_id}/{code}")) % 10u64.pow(17));
        let Ok(mut book) = self.book.lock() else { return contract_id };
        book.contracts.insert(
            contract_id.clone(),
            Contract {
                plan_id: plan_id.clone(),
                contract_code: code.clone(),
                display_account: p["contract_display_account"].clone(),
                request_serial: p["request_serial"].clone(),
                state: "0",
                terminated_time: String::new(),
                termination_remark: String::new(),
            },
        );
        drop(book);
        let mut callback: Params = [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("mch_id", self.config.mch_id.as_str()),
            ("contract_code", code.as_str()),
            ("plan_id", plan_id.as_str()),
            ("openid", "oMockPayer0000000000000000000"),
            ("change_type", "ADD"),
            ("contract_id", contract_id.as_str()),
            ("request_serial", p["request_serial"].as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        callback.insert("operate_time".into(), beijing_time(now_secs()));
        self.sign(&mut callback, SignType::Md5);
        self.post_callback(p["notify_url"].clone(), v2::to_xml(&callback));
        contract_id
    }

    /// Decides every accepted order whose time has come, and posts each one's result notice.
    fn settle_due(&self) {
        let now = std::time::Instant::now();
        let decided: Vec<(String, Order)> = match self.book.lock() {
            Ok(mut book) => {
                book.orders.iter_mut().filter_map(|(no, o)| o.settle(now).then(|| (no.clone(), o.clone()))).collect()
            }
            Err(_) => return,
        };
        for (out_trade_no, order) in decided {
            self.deduction_callback(&out_trade_no, &order);
        }
    }

    /// Posts the deduction-result callback of a decided order.
    fn deduction_callback(&self, out_trade_no: &str, order: &Order) {
        let mut p = Params::new();
        p.insert("return_code".into(), "SUCCESS".into());
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), format!("{:016x}", roll(self.config.seed ^ 7, out_trade_no)));
        p.insert("out_trade_no".into(), out_trade_no.into());
        p.insert("contract_id".into(), order.contract_id.clone());
        p.insert("total_fee".into(), order.total_fee.to_string());
        p.insert("fee_type".into(), "CNY".into());
        p.insert("trade_type".into(), "PAP".into());
        p.insert("bank_type".into(), "CFT".into());
        p.insert("trade_state".into(), order.trade_state.into());
        if order.outcome == "SUCCESS" {
            p.insert("result_code".into(), "SUCCESS".into());
            p.insert("transaction_id".into(), order.transaction_id.clone());
            p.insert("time_end".into(), beijing_time(now_secs()));
        } else {
            p.insert("result_code".into(), "FAIL".into());
            p.insert("err_code".into(), order.err_code.into());
            p.insert("err_code_des".into(), order.err_code.into());
        }
        self.sign(&mut p, order.sign_type);
        self.post_callback(order.notify_url.clone(), v2::to_xml(&p));
    }

    /// Best effort, in the background: a few attempts, until the merchant acknowledges.
    fn post_callback(&self, url: String, xml: String) {
        if url.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return;
        }
        let (http, book, options) = (self.http.clone(), self.book.clone(), self.options.clone());
        tokio::spawn(async move {
            for attempt in 0..options.callback_attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(options.callback_retry_delay).await;
                }
                let sent = http.post(&url).header("content-type", "text/xml").body(xml.clone()).send().await;
                let acknowledged = match sent {
                    Ok(r) if r.status().is_success() => r
                        .text()
                        .await
                        .ok()
                        .and_then(|t| v2::from_xml(&t).ok())
                        .is_some_and(|p| p.get("return_code").map(|c| c.trim()) == Some("SUCCESS")),
                    _ => false,
                };
                if acknowledged {
                    if let Ok(mut book) = book.lock() {
                        book.callbacks_delivered += 1;
                    }
                    return;
                }
            }
            if let Ok(mut book) = book.lock() {
                book.callbacks_failed += 1;
            }
        });
    }

    /// Checks a v3 request's `Authorization`: the merchant, its certificate serial, a fresh
    /// timestamp, and a signature over the request that verifies with the merchant's key.
    fn check_v3(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &str) -> Result<(), String> {
        let header =
            headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or("the Authorization header is missing")?;
        let fields = header
            .strip_prefix("WECHATPAY2-SHA256-RSA2048 ")
            .ok_or("the Authorization scheme is not WECHATPAY2-SHA256-RSA2048")?;
        let mut parts = HashMap::new();
        for item in fields.split(',') {
            let (k, v) = item.split_once('=').ok_or("a malformed Authorization parameter")?;
            parts.insert(k.trim(), v.trim().trim_matches('"'));
        }
        let part = |k: &str| parts.get(k).copied().ok_or(format!("Authorization has no {k}"));
        if part("mchid")? != self.config.mch_id {
            return Err("mchid does not match".into());
        }
        if part("serial_no")? != self.options.merchant_serial {
            return Err(format!("serial_no {} names no certificate of this merchant", part("serial_no")?));
        }
        let timestamp: i64 = part("timestamp")?.parse().map_err(|_| "timestamp is not a number")?;
        if (now_secs() - timestamp).abs() > v3::MAX_SKEW_SECS {
            return Err("timestamp is more than five minutes off".into());
        }
        let url = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        let message = v3::request_message(method.as_str(), url, timestamp, part("nonce_str")?, body);
        let key = self.merchant_key.as_ref().ok_or("the mock's merchant public key is unreadable")?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(part("signature")?)
            .map_err(|_| "the signature is not Base64")?;
        let signature = Signature::try_from(bytes.as_slice()).map_err(|_| "the signature is malformed")?;
        key.verify(message.as_bytes(), &signature)
            .map_err(|_| format!("the signature does not verify over {message:?}"))
    }

    /// A v3 answer signed with the platform key, as WeChat Pay signs them.
    fn v3_answer(&self, status: StatusCode, body: String) -> Response {
        let timestamp = now_secs();
        let nonce = format!("{:032X}", u128::from(roll(self.config.seed, &body)) << 64 | u128::from(roll(0, &body)));
        let mut response = (status, body.clone()).into_response();
        let headers = response.headers_mut();
        if !body.is_empty() {
            headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let Some(platform) = &self.platform else { return response };
        let mut signature = platform.sign(&v3::response_message(timestamp, &nonce, &body));
        if self.options.tamper_signatures {
            signature = format!("A{}", &signature[1..]);
            if signature == platform.sign(&v3::response_message(timestamp, &nonce, &body)) {
                signature = format!("B{}", &signature[1..]);
            }
        }
        for (name, value) in [
            ("wechatpay-serial", self.options.platform_key_id.clone()),
            ("wechatpay-timestamp", timestamp.to_string()),
            ("wechatpay-nonce", nonce.clone()),
            ("wechatpay-signature", signature),
            ("request-id", format!("mock-{nonce}")),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        response
    }

    fn v3_error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.v3_answer(status, serde_json::json!({"code": code, "message": message}).to_string())
    }
}

/// An XML body, typed as WeChat Pay types it.
struct Xml(String);

impl IntoResponse for Xml {
    fn into_response(self) -> Response {
        ([(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")], self.0).into_response()
    }
}

fn result(code: &str, err: Option<(&str, &str)>) -> Params {
    let mut p = Params::new();
    p.insert("return_code".into(), "SUCCESS".into());
    p.insert("result_code".into(), code.into());
    if let Some((err_code, des)) = err {
        p.insert("err_code".into(), err_code.into());
        p.insert("err_code_des".into(), des.into());
    }
    p
}

async fn pappayapply(State(mock): State<Mock>, body: String) -> Xml {
    Xml(apply_answer(&mock, &body))
}

fn apply_answer(mock: &Mock, body: &str) -> String {
    const REQUIRED: &[&str] = &[
        "appid",
        "mch_id",
        "nonce_str",
        "sign",
        "body",
        "out_trade_no",
        "total_fee",
        "spbill_create_ip",
        "notify_url",
        "trade_type",
        "contract_id",
    ];
    let (p, sign_type) = match mock.accept(body, REQUIRED) {
        Ok(ok) => ok,
        Err(e) => return mock.refuse(e),
    };
    if p["trade_type"] != "PAP" {
        return mock.refuse("trade_type must be PAP".into());
    }
    let Ok(total_fee) = p["total_fee"].parse::<i64>() else {
        return mock.refuse("total_fee must be an integer number of fen".into());
    };
    if total_fee <= 0 {
        return mock.refuse("total_fee must be positive".into());
    }
    let out_trade_no = p["out_trade_no"].clone();
    let contract_id = p["contract_id"].clone();
    let Ok(mut book) = mock.book.lock() else { return mock.refuse("mock state poisoned".into()) };
    if let Some(order) = book.orders.get_mut(&out_trade_no) {
        // The same number is never debited twice.
        order.applications += 1;
        let answer = if order.trade_state == "SUCCESS" {
            result("FAIL", Some(("ORDERPAID", "该订单已支付")))
        } else {
            result("FAIL", Some(("OUT_TRADE_NO_USED", "商户订单号重复")))
        };
        drop(book);
        return mock.answer(answer, sign_type);
    }
    match book.contracts.get(&contract_id) {
        Some(c) if c.state != "0" => {
            drop(book);
            return mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type);
        }
        Some(_) => {}
        None => {
            // Not seen before: taken as signed, as the mock has always taken it.
            book.contracts.insert(
                contract_id.clone(),
                Contract {
                    plan_id: String::new(),
                    contract_code: String::new(),
                    display_account: String::new(),
                    request_serial: String::new(),
                    state: "0",
                    terminated_time: String::new(),
                    termination_remark: String::new(),
                },
            );
        }
    }
    let r = roll(mock.config.seed, &out_trade_no) % 10_000;
    let notenough = u64::from(mock.config.notenough_basis_points);
    let systemerror = notenough + u64::from(mock.config.systemerror_basis_points);
    let userpaying = systemerror + u64::from(mock.options.userpaying_basis_points);
    // Accepted, then decided: the payer's funds, or an answer that hides whether it was taken.
    let (state, outcome, err_code, answer) = if r < notenough {
        ("ACCEPT", "PAY_FAIL", "NOTENOUGH", result("SUCCESS", None))
    } else if r < systemerror {
        let taken = roll(mock.config.seed ^ 1, &out_trade_no).is_multiple_of(2);
        let (outcome, err_code) = if taken { ("SUCCESS", "") } else { ("PAY_FAIL", "SYSTEMERROR") };
        ("ACCEPT", outcome, err_code, result("FAIL", Some(("SYSTEMERROR", "系统超时"))))
    } else if r < userpaying {
        ("USERPAYING", "SUCCESS", "", result("FAIL", Some(("USERPAYING", "用户支付中"))))
    } else {
        ("ACCEPT", "SUCCESS", "", result("SUCCESS", None))
    };
    let order = Order {
        contract_id,
        total_fee,
        trade_state: state,
        outcome,
        decided_at: std::time::Instant::now() + mock.options.deduct_after,
        err_code,
        transaction_id: if outcome == "SUCCESS" {
            format!("4200{:016}", roll(mock.config.seed, &out_trade_no) % 10u64.pow(16))
        } else {
            String::new()
        },
        applications: 1,
        notify_url: p["notify_url"].clone(),
        sign_type,
        refunded_fen: 0,
    };
    book.orders.insert(out_trade_no, order);
    drop(book);
    let later = mock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(later.options.deduct_after).await;
        later.settle_due();
    });
    mock.answer(answer, sign_type)
}

async fn orderquery(State(mock): State<Mock>, body: String) -> Xml {
    Xml(query_answer(&mock, &body))
}

fn query_answer(mock: &Mock, body: &str) -> String {
    let (p, sign_type) = match mock.accept(body, &["appid", "mch_id", "nonce_str", "sign"]) {
        Ok(ok) => ok,
        Err(e) => return mock.refuse(e),
    };
    let by_number = p.get("out_trade_no").filter(|v| !v.is_empty());
    let by_transaction = p.get("transaction_id").filter(|v| !v.is_empty());
    if by_number.is_none() && by_transaction.is_none() {
        return mock.refuse("missing parameter out_trade_no or transaction_id".into());
    }
    mock.settle_due();
    let (found, decided) = {
        let Ok(mut book) = mock.book.lock() else { return mock.refuse("mock state poisoned".into()) };
        let found = book.orders.iter_mut().find(|(no, o)| {
            Some(*no) == by_number || (by_transaction.is_some() && Some(&o.transaction_id) == by_transaction)
        });
        match found {
            None => (None, None),
            Some((no, order)) => {
                let seen = (no.clone(), order.clone());
                // The payer finished paying: the next look sees it decided.
                let decided = if order.trade_state == "USERPAYING" {
                    order.trade_state = order.outcome;
                    Some((no.clone(), order.clone()))
                } else {
                    None
                };
                (Some(seen), decided)
            }
        }
    };
    if let Some((no, order)) = decided {
        mock.deduction_callback(&no, &order);
    }
    let Some((out_trade_no, order)) = found else {
        return mock.answer(result("FAIL", Some(("ORDERNOTEXIST", "此交易订单号不存在"))), sign_type);
    };
    let mut answer = result("SUCCESS", None);
    answer.insert("out_trade_no".into(), out_trade_no);
    let state = if order.trade_state == "SUCCESS" && order.refunded_fen > 0 { "REFUND" } else { order.trade_state };
    answer.insert("trade_state".into(), state.into());
    answer.insert("trade_type".into(), "PAP".into());
    answer.insert("total_fee".into(), order.total_fee.to_string());
    answer.insert("contract_id".into(), order.contract_id);
    answer.insert("transaction_id".into(), order.transaction_id);
    if order.trade_state == "PAY_FAIL" {
        answer.insert("err_code".into(), order.err_code.into());
        answer.insert("trade_state_desc".into(), format!("支付失败: {}", order.err_code));
    }
    mock.answer(answer, sign_type)
}

/// The contract a contract call names, by `contract_id` or by `plan_id` + `contract_code`.
fn named_contract(book: &Book, p: &Params) -> Option<String> {
    if let Some(id) = p.get("contract_id").filter(|v| !v.is_empty()) {
        return book.contracts.contains_key(id).then(|| id.clone());
    }
    let (plan, code) = (p.get("plan_id")?, p.get("contract_code")?);
    book.contracts
        .iter()
        .filter(|(_, c)| &c.plan_id == plan && &c.contract_code == code)
        .min_by_key(|(_, c)| c.state)
        .map(|(id, _)| id.clone())
}

fn contract_request(mock: &Mock, body: &str) -> Result<(Params, SignType), String> {
    let (p, sign_type) = mock.accept(body, &["appid", "mch_id", "sign", "version"])?;
    let by_id = p.get("contract_id").is_some_and(|v| !v.is_empty());
    let by_code = ["plan_id", "contract_code"].iter().all(|k| p.get(*k).is_some_and(|v| !v.is_empty()));
    if !by_id && !by_code {
        return Err("missing parameter contract_id, or plan_id and contract_code".into());
    }
    Ok((p, sign_type))
}

async fn querycontract(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match contract_request(&mock, &body) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let found = {
        let Ok(book) = mock.book.lock() else { return Xml(mock.refuse("mock state poisoned".into())) };
        named_contract(&book, &p).and_then(|id| book.contracts.get(&id).map(|c| (id, c.clone())))
    };
    let Some((id, c)) = found else {
        return Xml(mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type));
    };
    let mut answer = result("SUCCESS", None);
    for (k, v) in [
        ("contract_id", id),
        ("plan_id", c.plan_id),
        ("contract_code", c.contract_code),
        ("contract_display_account", c.display_account),
        ("request_serial", c.request_serial),
        ("openid", "oMockPayer0000000000000000000".into()),
        ("contract_state", c.state.into()),
        ("contract_terminated_time", c.terminated_time.clone()),
        ("contract_termination_remark", c.termination_remark),
        ("contract_termination_mode", if c.state == "1" { "3".into() } else { String::new() }),
    ] {
        answer.insert(k.into(), v);
    }
    Xml(mock.answer(answer, sign_type))
}

async fn deletecontract(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match contract_request(&mock, &body) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    if p.get("contract_termination_remark").is_none_or(|r| r.is_empty()) {
        return Xml(mock.refuse("missing parameter contract_termination_remark".into()));
    }
    let deleted = {
        let Ok(mut book) = mock.book.lock() else { return Xml(mock.refuse("mock state poisoned".into())) };
        match named_contract(&book, &p) {
            Some(id) => match book.contracts.get_mut(&id) {
                Some(c) if c.state == "0" => {
                    c.state = "1";
                    c.terminated_time = beijing_time(now_secs());
                    c.termination_remark = p["contract_termination_remark"].clone();
                    book.notices.remove(&id);
                    Some(id)
                }
                _ => None,
            },
            None => None,
        }
    };
    let Some(id) = deleted else {
        return Xml(mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type));
    };
    let mut answer = result("SUCCESS", None);
    answer.insert("contract_id".into(), id);
    Xml(mock.answer(answer, sign_type))
}

const SIGNING_REQUIRED: &[&str] = &[
    "appid",
    "mch_id",
    "plan_id",
    "contract_code",
    "request_serial",
    "contract_display_account",
    "notify_url",
    "version",
    "timestamp",
    "sign",
];

/// `GET /papay/entrustweb`: MD5 only; the payer signs at once, and sees a page that says so.
async fn entrustweb(State(mock): State<Mock>, Query(query): Query<HashMap<String, String>>) -> Response {
    let p: Params = query.into_iter().collect();
    if p.get("sign_type").is_some_and(|t| !t.is_empty() && t != "MD5") {
        return (StatusCode::BAD_REQUEST, "entrustweb accepts MD5 signatures only").into_response();
    }
    match mock.accept_params(p, SIGNING_REQUIRED) {
        Ok((p, _)) => {
            let id = mock.sign_contract(&p);
            (StatusCode::OK, format!("signed: contract_id={id}")).into_response()
        }
        Err(e) => {
            if let Ok(mut book) = mock.book.lock() {
                book.refused += 1;
            }
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

/// `GET /papay/h5entrustweb`: answers XML with the `redirect_url` the payer opens.
async fn h5entrustweb(
    State(mock): State<Mock>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Xml {
    let p: Params = query.into_iter().collect();
    let mut required = SIGNING_REQUIRED.to_vec();
    required.push("clientip");
    let (p, sign_type) = match mock.accept_params(p, &required) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let id = mock.sign_contract(&p);
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let mut answer = result("SUCCESS", None);
    answer.insert("redirect_url".into(), format!("http://{host}/mock/signed?contract_id={id}"));
    Xml(mock.answer(answer, sign_type))
}

/// `POST /papay/preentrustweb`: answers the `pre_entrustweb_id` an APP hands to WeChat.
async fn preentrustweb(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match mock.accept(&body, SIGNING_REQUIRED) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let id = mock.sign_contract(&p);
    let pre = format!("mockpre{:016x}", roll(mock.config.seed, &id));
    let mut answer = result("SUCCESS", None);
    answer.insert("pre_entrustweb_id".into(), pre.clone());
    answer.insert("miniprogram_username".into(), "gh_mock0000000".into());
    answer.insert("miniprogram_path".into(), format!("pages/index/index?sign_scene=app&pre_entrustweb_id={pre}"));
    Xml(mock.answer(answer, sign_type))
}

async fn signed(Query(query): Query<HashMap<String, String>>) -> String {
    format!("signed: contract_id={}", query.get("contract_id").map_or("", String::as_str))
}

/// The JSON body of a v3 request once its signature, merchant and app hold.
fn v3_request(
    mock: &Mock,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &str,
) -> Result<serde_json::Value, Box<Response>> {
    if let Err(e) = mock.check_v3(method, uri, headers, body) {
        if let Ok(mut book) = mock.book.lock() {
            book.refused += 1;
        }
        return Err(Box::new(mock.v3_error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", &e)));
    }
    // The key the client verifies with: the mock answers with its own, and counts requests
    // that name none.
    match headers.get("wechatpay-serial").and_then(|v| v.to_str().ok()) {
        None | Some("") => {
            if let Ok(mut book) = mock.book.lock() {
                book.v3_without_serial += 1;
            }
        }
        Some(serial) if serial != mock.options.platform_key_id => {
            let message = format!("Wechatpay-Serial {serial} names no platform certificate or public key");
            return Err(Box::new(mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", &message)));
        }
        Some(_) => {}
    }
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Box::new(mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", &format!("not JSON: {e}"))))?;
    Ok(v)
}

fn same_merchant(mock: &Mock, v: &serde_json::Value) -> Result<(), Box<Response>> {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    if text("mchid") != mock.config.mch_id || text("appid") != mock.config.appid {
        return Err(Box::new(mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "mchid and appid do not match")));
    }
    Ok(())
}

/// Whether the contract may be notified: one not seen is taken as signed; one terminated is gone.
fn live_contract(book: &mut Book, contract_id: &str) -> bool {
    book.contracts
        .entry(contract_id.to_string())
        .or_insert_with(|| Contract {
            plan_id: String::new(),
            contract_code: String::new(),
            display_account: String::new(),
            request_serial: String::new(),
            state: "0",
            terminated_time: String::new(),
            termination_remark: String::new(),
        })
        .state
        == "0"
}

/// A signed v3 request from the mock's own merchant, its body read.
fn merchant_request(
    mock: &Mock,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &str,
) -> Result<serde_json::Value, Box<Response>> {
    let v = v3_request(mock, method, uri, headers, body)?;
    same_merchant(mock, &v)?;
    Ok(v)
}

/// `POST /v3/papay/contracts/{contract_id}/notify`: 204 the first time in a cycle; the same
/// notice again is `RESOURCE_ALREADY_EXISTS`, another one `INVALID_REQUEST`.
async fn notify(
    State(mock): State<Mock>,
    Path(contract_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let v = match merchant_request(&mock, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(amount) = v.pointer("/estimated_amount/amount").and_then(|a| a.as_i64()).filter(|a| *a > 0) else {
        return mock.v3_error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "estimated_amount.amount must be a positive integer",
        );
    };
    let days = v.pointer("/deduct_duration/count").and_then(|c| c.as_i64()).unwrap_or(1);
    if !(1..=3).contains(&days) {
        return mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "deduct_duration.count must be 1, 2 or 3");
    }
    let Ok(mut book) = mock.book.lock() else {
        return mock.v3_error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "mock state poisoned");
    };
    if !live_contract(&mut book, &contract_id) {
        drop(book);
        return mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "签约协议不存在");
    }
    let answer = match book.notices.get(&contract_id) {
        Some(given) if *given == (amount, days) => Some(("RESOURCE_ALREADY_EXISTS", "已发送过相同的预扣费通知")),
        Some(_) => Some(("INVALID_REQUEST", "本周期内已发送过不同参数的预扣费通知")),
        None => {
            book.notices.insert(contract_id, (amount, days));
            None
        }
    };
    drop(book);
    match answer {
        Some((code, message)) => mock.v3_error(StatusCode::BAD_REQUEST, code, message),
        None => mock.v3_answer(StatusCode::NO_CONTENT, String::new()),
    }
}

/// `POST /v3/papay/contracts/{contract_id}/fail-notify`.
async fn fail_notify(
    State(mock): State<Mock>,
    Path(contract_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(r) = merchant_request(&mock, &method, &uri, &headers, &body) {
        return *r;
    }
    let live = mock.book.lock().map(|mut book| live_contract(&mut book, &contract_id)).unwrap_or(false);
    if !live {
        return mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "签约协议不存在");
    }
    mock.v3_answer(StatusCode::NO_CONTENT, String::new())
}

/// `POST /v3/refund/domestic/refunds`: refunds a debited order up to what it took; the same
/// `out_refund_no` answers the same refund.
async fn refund(State(mock): State<Mock>, method: Method, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let v = match v3_request(&mock, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let bad = |code: &str, message: &str| mock.v3_error(StatusCode::BAD_REQUEST, code, message);
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let out_refund_no = text("out_refund_no");
    if out_refund_no.is_empty() {
        return bad("PARAM_ERROR", "out_refund_no is missing");
    }
    let (Some(amount), Some(total)) = (
        v.pointer("/amount/refund").and_then(|a| a.as_i64()).filter(|a| *a > 0),
        v.pointer("/amount/total").and_then(|a| a.as_i64()),
    ) else {
        return bad("PARAM_ERROR", "amount.refund and amount.total must be integers, the refund positive");
    };
    if v.pointer("/amount/currency").and_then(|c| c.as_str()) != Some("CNY") {
        return bad("PARAM_ERROR", "amount.currency must be CNY");
    }
    let (by_transaction, by_number) = (text("transaction_id"), text("out_trade_no"));
    mock.settle_due();
    let Ok(mut book) = mock.book.lock() else {
        return mock.v3_error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "mock state poisoned");
    };
    let found = book
        .orders
        .iter()
        .find(|(no, o)| {
            (!by_transaction.is_empty() && o.transaction_id == by_transaction)
                || (by_transaction.is_empty() && !by_number.is_empty() && **no == by_number)
        })
        .map(|(no, o)| (no.clone(), o.clone()));
    let Some((out_trade_no, order)) = found else {
        drop(book);
        return mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    let refund_id = match book.refunds.get(&out_refund_no) {
        Some(r) if r.out_trade_no == out_trade_no && r.amount == amount => r.refund_id.clone(),
        Some(_) => {
            drop(book);
            return bad("INVALID_REQUEST", "out_refund_no was used for another refund");
        }
        None => {
            if order.trade_state != "SUCCESS" {
                drop(book);
                return bad("INVALID_REQUEST", "订单未支付");
            }
            if total != order.total_fee {
                drop(book);
                return bad("INVALID_REQUEST", "amount.total does not match the order");
            }
            if order.refunded_fen + amount > order.total_fee {
                drop(book);
                return bad("INVALID_REQUEST", "申请退款金额超过订单可退金额");
            }
            let refund_id = format!("50{:027}", u128::from(roll(mock.config.seed, &out_refund_no)));
            book.refunds.insert(
                out_refund_no.clone(),
                Refund { refund_id: refund_id.clone(), out_trade_no: out_trade_no.clone(), amount },
            );
            if let Some(o) = book.orders.get_mut(&out_trade_no) {
                o.refunded_fen += amount;
            }
            refund_id
        }
    };
    drop(book);
    let answer = serde_json::json!({
        "refund_id": refund_id,
        "out_refund_no": out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": beijing_time(now_secs()),
        "success_time": beijing_time(now_secs()),
        "status": "SUCCESS",
        "amount": {"total": order.total_fee, "refund": amount, "payer_total": order.total_fee,
                   "payer_refund": amount, "settlement_total": order.total_fee, "settlement_refund": amount,
                   "discount_refund": 0, "currency": "CNY"},
    });
    mock.v3_answer(StatusCode::OK, answer.to_string())
}

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
        "notices": book.notices.len(),
        "contracts": book.contracts.len(),
        "terminated_contracts": book.contracts.values().filter(|c| c.state == "1").count(),
        "callbacks_delivered": book.callbacks_delivered,
        "callbacks_failed": book.callbacks_failed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn config() -> MockConfig {
        MockConfig { systemerror_basis_points: 0, notenough_basis_points: 0, ..MockConfig::default() }
    }

    fn apply(out_trade_no: &str, sign_type: SignType, key: &str) -> String {
        let c = config();
        let mut p: Params = [
            ("appid", c.appid.as_str()),
            ("mch_id", c.mch_id.as_str()),
            ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            ("body", "视频会员 11月"),
            ("out_trade_no", out_trade_no),
            ("total_fee", "1990"),
            ("spbill_create_ip", "203.0.113.9"),
            ("notify_url", "https://merchant.example/wxpay/notify"),
            ("trade_type", "PAP"),
            ("contract_id", "201710180325670965"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v2::sign_in_place(&mut p, key, sign_type);
        v2::to_xml(&p)
    }

    async fn call(router: &Router, path: &str, body: String) -> Params {
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        v2::from_xml(std::str::from_utf8(&bytes).unwrap()).unwrap()
    }

    fn query(out_trade_no: &str, sign_type: SignType) -> String {
        let c = config();
        let mut q: Params = [
            ("appid", c.appid.as_str()),
            ("mch_id", c.mch_id.as_str()),
            ("nonce_str", "x"),
            ("out_trade_no", out_trade_no),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v2::sign_in_place(&mut q, &c.api_key, sign_type);
        v2::to_xml(&q)
    }

    #[tokio::test]
    async fn accepts_then_deducts_once_per_out_trade_no_and_answers_signed() {
        let c = config();
        let r = router(c.clone());
        let first = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::HmacSha256, &c.api_key)).await;
        assert_eq!((first["return_code"].as_str(), first["result_code"].as_str()), ("SUCCESS", "SUCCESS"));
        assert!(!first.contains_key("sign_type"), "answers do not name their sign type");
        assert_eq!(v2::verify(&first, &c.api_key, SignType::HmacSha256), Ok(()), "signed as the request was");
        let again = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::Md5, &c.api_key)).await;
        assert_eq!(again["err_code"], "OUT_TRADE_NO_USED");

        let pending = call(&r, "/pay/paporderquery", query("ch1_1", SignType::HmacSha256)).await;
        assert_eq!(pending["trade_state"], "ACCEPT");
        assert_eq!(v2::verify(&pending, &c.api_key, SignType::HmacSha256), Ok(()));
        tokio::time::sleep(MockOptions::default().deduct_after).await;
        let found = call(&r, "/pay/paporderquery", query("ch1_1", SignType::Md5)).await;
        assert_eq!((found["trade_state"].as_str(), found["total_fee"].as_str()), ("SUCCESS", "1990"));
        assert!(found["transaction_id"].starts_with("4200"));
        assert_eq!(v2::verify(&found, &c.api_key, SignType::Md5), Ok(()));
        let paid = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::Md5, &c.api_key)).await;
        assert_eq!(paid["err_code"], "ORDERPAID");
    }

    #[tokio::test]
    async fn refuses_bad_signatures_and_missing_parameters() {
        let c = config();
        let r = router(c.clone());
        let forged = call(&r, "/pay/pappayapply", apply("ch2_1", SignType::Md5, "not-the-key")).await;
        assert_eq!(forged["return_code"], "FAIL");
        assert!(forged["return_msg"].contains("SIGNERROR") && forged["return_msg"].contains("out_trade_no=ch2_1"));
        let mut p = v2::from_xml(&apply("ch2_2", SignType::Md5, &c.api_key)).unwrap();
        p.remove("contract_id");
        v2::sign_in_place(&mut p, &c.api_key, SignType::Md5);
        let missing = call(&r, "/pay/pappayapply", v2::to_xml(&p)).await;
        assert!(missing["return_msg"].contains("contract_id"), "{missing:?}");
        let garbage = call(&r, "/pay/pappayapply", "<xml><a>".into()).await;
        assert_eq!(garbage["return_code"], "FAIL");
    }

    #[tokio::test]
    async fn declines_and_ambiguous_answers_as_configured() {
        let c = MockConfig { notenough_basis_points: 5_000, systemerror_basis_points: 5_000, ..config() };
        let r = router(c.clone());
        let mut answers = std::collections::BTreeSet::new();
        for i in 0..40 {
            let a = call(&r, "/pay/pappayapply", apply(&format!("ch3_{i}"), SignType::Md5, &c.api_key)).await;
            answers.insert((a["result_code"].clone(), a.get("err_code").cloned().unwrap_or_default()));
        }
        let accepted = ("SUCCESS".to_string(), String::new());
        let systemerror = ("FAIL".to_string(), "SYSTEMERROR".to_string());
        assert_eq!(answers.into_iter().collect::<Vec<_>>(), vec![systemerror, accepted]);
        // Every order short of funds fails once decided, naming why.
        tokio::time::sleep(MockOptions::default().deduct_after).await;
        let mut failed = std::collections::BTreeSet::new();
        for i in 0..40 {
            let q = call(&r, "/pay/paporderquery", query(&format!("ch3_{i}"), SignType::Md5)).await;
            if q["trade_state"] == "PAY_FAIL" {
                failed.insert(q["err_code"].clone());
            }
        }
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), vec!["NOTENOUGH".to_string(), "SYSTEMERROR".to_string()]);
    }
}
