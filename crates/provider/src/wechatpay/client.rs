//! The WeChat Pay provider: papay over HTTP. Deductions, order and contract queries,
//! termination and the signing entries speak API v2 (flat XML signed with the APIv2 key); the
//! pre-deduction notice and refunds speak API v3 (JSON, signed with the merchant's RSA key, and
//! answered signed by WeChat Pay).
//!
//! Money that may or may not have moved is never guessed at: an answer that cannot be read or
//! trusted, a timeout, a 5xx, `SYSTEMERROR`, `USERPAYING`, an error code this module does not
//! know, or an acceptance (`result_code=SUCCESS` only means the request was accepted) is
//! `Unknown` for a deduction and `Pending` for a query. Only the query settles an attempt; an
//! attempt is never sent again by this module.
pub mod complaints;
use super::cert::CertInfo;
use super::v2::{self, Params, SignType};
use super::v3::{MerchantSigner, PlatformVerifier};
use crate::{
    BoxFuture, ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome,
    RefundRequest, SigningChannel, SigningRequest, Termination,
};
use autodebit_domain::{Currency, Money};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// WeChat Pay's API host, for v2 and v3 alike.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// What `charge` answers when WeChat Pay accepted a deduction: the outcome comes later.
pub const ACCEPTED: &str = "accepted; the result comes by notice or query";

/// A key WeChat Pay signs its v3 answers and callbacks with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformKey {
    /// A platform certificate (PEM); it is known by its own serial, and refused when expired.
    Certificate { pem: String },
    /// A WeChat Pay public key (SubjectPublicKeyInfo PEM) and its id (`PUB_KEY_ID_…`).
    PublicKey { id: String, pem: String },
}

/// The API v3 settings, needed by the pre-deduction notice and refunds only. `Debug` leaves
/// the private key and the APIv3 key out, so a logged configuration leaks neither.
#[derive(Clone, PartialEq, Eq)]
pub struct V3Config {
    /// The serial number of the merchant's API certificate (`serial_no` in every request).
    pub merchant_serial: String,
    /// The merchant's API private key, PKCS#8 PEM (`apiclient_key.pem`).
    pub merchant_private_key_pem: String,
    /// The 32-byte APIv3 key, which decrypts v3 callbacks (kept here for their handlers).
    pub api_v3_key: String,
    /// Every key WeChat Pay may sign with; during a switch from certificates to the public key
    /// both are kept.
    pub platform_keys: Vec<PlatformKey>,
}

/// How to reach one merchant's WeChat Pay account. `Debug` masks the APIv2 key.
#[derive(Clone, PartialEq, Eq)]
pub struct WeChatPayConfig {
    pub appid: String,
    pub mch_id: String,
    /// The APIv2 key (32 characters, set in the merchant platform).
    pub api_v2_key: String,
    /// How v2 requests are signed; `entrustweb` and `deletecontract` are MD5 whatever this
    /// says, as WeChat Pay documents them MD5 only.
    pub sign_type: SignType,
    /// Where v2 calls go (`/pay/…`, `/papay/…`).
    pub base_url: String,
    /// Where v3 calls go (`/v3/…`).
    pub v3_base_url: String,
    /// The host of the signing entries the payer's browser opens (`entrustweb`, `h5entrustweb`).
    pub signing_base_url: String,
    /// Where WeChat Pay sends deduction results (`notify_url` of `pappayapply`).
    pub notify_url: String,
    /// Where WeChat Pay sends refund results (v3 `notify_url`); may be empty.
    pub refund_notify_url: String,
    /// The papay template (`plan_id`) a signing uses when the request names none.
    pub plan_id: String,
    /// What the payer sees as the deduction's description (`body`).
    pub body: String,
    /// The IP of the merchant's server (`spbill_create_ip`).
    pub spbill_create_ip: String,
    /// How many days the pre-deduction notice announces (`deduct_duration.count`, 1 to 3).
    pub notice_days: u32,
    /// The longest a call may take; a deduction that times out is `Unknown`.
    pub timeout: Duration,
    pub v3: Option<V3Config>,
    /// Deductions are made for profit sharing (`profit_sharing=Y`): the money stays frozen
    /// until the settled charge's splits are shared (`/v3/profitsharing/orders`). The account
    /// must have profit sharing enabled.
    pub profit_sharing: bool,
}

impl WeChatPayConfig {
    /// A configuration against WeChat Pay itself, with HMAC-SHA256 v2 signatures; `notify_url`,
    /// `spbill_create_ip` and `plan_id` are still to be set (a call that needs one names it).
    pub fn new(appid: impl Into<String>, mch_id: impl Into<String>, api_v2_key: impl Into<String>) -> Self {
        WeChatPayConfig {
            appid: appid.into(),
            mch_id: mch_id.into(),
            api_v2_key: api_v2_key.into(),
            sign_type: SignType::HmacSha256,
            base_url: DEFAULT_BASE_URL.into(),
            v3_base_url: DEFAULT_BASE_URL.into(),
            signing_base_url: DEFAULT_BASE_URL.into(),
            notify_url: String::new(),
            refund_notify_url: String::new(),
            plan_id: String::new(),
            body: "Auto-debit".into(),
            spbill_create_ip: String::new(),
            notice_days: 1,
            timeout: Duration::from_secs(10),
            v3: None,
            profit_sharing: false,
        }
    }

    /// Points every call (v2, v3 and the signing entries) at `url`, as a test does at the mock.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into().trim_end_matches('/').to_string();
        self.base_url = url.clone();
        self.v3_base_url = url.clone();
        self.signing_base_url = url;
        self
    }
}

impl std::fmt::Debug for V3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Config")
            .field("merchant_serial", &self.merchant_serial)
            .field("merchant_private_key_pem", &"***")
            .field("api_v3_key", &"***")
            .field("platform_keys", &self.platform_keys.len())
            .finish()
    }
}

impl std::fmt::Debug for WeChatPayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatPayConfig")
            .field("appid", &self.appid)
            .field("mch_id", &self.mch_id)
            .field("api_v2_key", &"***")
            .field("sign_type", &self.sign_type)
            .field("base_url", &self.base_url)
            .field("v3_base_url", &self.v3_base_url)
            .field("signing_base_url", &self.signing_base_url)
            .field("notify_url", &self.notify_url)
            .field("refund_notify_url", &self.refund_notify_url)
            .field("plan_id", &self.plan_id)
            .field("body", &self.body)
            .field("spbill_create_ip", &self.spbill_create_ip)
            .field("notice_days", &self.notice_days)
            .field("timeout", &self.timeout)
            .field("v3", &self.v3)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("WeChat Pay configuration: {0} is empty")]
    Missing(&'static str),
    #[error("WeChat Pay configuration: {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

/// Which contract a contract call names: WeChat Pay's id, or the template and the merchant's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractRef {
    Id(String),
    Code { plan_id: String, contract_code: String },
}

/// `contract_state` of `querycontract`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractState {
    /// 0: signed.
    Signed,
    /// 1: not signed, which includes terminated.
    NotSigned,
    /// 9: the payer is signing.
    Signing,
    Other(String),
}

/// What `querycontract` tells of a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractInfo {
    pub contract_id: String,
    pub plan_id: String,
    pub contract_code: String,
    pub openid: String,
    pub display_account: String,
    pub state: ContractState,
    pub signed_time: String,
    pub expired_time: String,
    pub terminated_time: String,
    /// 2 user, 3 merchant API (or merchant platform), 4 merchant platform, 5 account
    /// cancelled, 7 customer service; empty while signed.
    pub termination_mode: String,
    pub termination_remark: String,
}

/// What `preentrustweb` answers: the APP hands `pre_entrustweb_id` to the WeChat SDK, or opens
/// the mini-program WeChat Pay names (templates from 2025-09-23 on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreEntrust {
    pub pre_entrustweb_id: String,
    pub miniprogram_username: String,
    pub miniprogram_path: String,
}

/// How a v2 call went wrong before a trustworthy business answer was had.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallError {
    /// Not sent: a parameter is missing (the merchant's configuration, or the request).
    Missing(&'static str),
    /// Sent, and WeChat Pay refused the request itself (`return_code=FAIL`).
    Refused(String),
    /// Sent or maybe sent, and no answer can be trusted.
    Transport(String),
}

/// A v3 answer whose signature verified.
struct V3Answer {
    status: u16,
    body: String,
}

/// The WeChat Pay papay provider.
pub struct WeChatPay {
    config: WeChatPayConfig,
    http: reqwest::Client,
    signer: Option<MerchantSigner>,
    verifier: PlatformVerifier,
    /// The `Wechatpay-Serial` v3 requests carry: the WeChat Pay public key id when one is
    /// configured (WeChat Pay then signs its answers with that key), else the first platform
    /// certificate's serial — as the official SDKs send the serial of the key they verify with.
    platform_serial: String,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

fn code_of(p: &Params, name: &str) -> String {
    p.get(name).map(|v| v.trim().to_string()).unwrap_or_default()
}

/// What a `trade_state` or `err_code` of WeChat Pay says of a deduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The money moved (the answer carries its `transaction_id`).
    Paid,
    /// Not decided yet, or not known whether money moved: ask again by query, never resend.
    Pending,
    /// No order has that number: it never arrived, and may be sent.
    NoOrder,
    /// No money moved; a new attempt (a new `out_trade_no`) may pass.
    Retryable,
    /// No money moved, and none will until the contract or the payer's account changes.
    Final,
    /// No money moved: the merchant's own setup is wrong, and nothing passes until it is fixed.
    Misconfigured,
}

/// Every `trade_state` and `err_code` WeChat Pay documents for `pappayapply`,
/// `paporderquery` (and `orderquery`) and the deduction result notice, and what each says of
/// an attempt. A code not listed here is `Pending`: the query settles it.
pub const CODES: &[(&str, Verdict, &str)] = {
    use Verdict::*;
    &[
        // trade_state
        ("SUCCESS", Paid, "paid"),
        ("REFUND", Paid, "paid, and (part of it) refunded since"),
        ("ACCEPT", Pending, "accepted, the deduction pending"),
        ("NOTPAY", Pending, "not paid yet"),
        ("USERPAYING", Pending, "the payer is paying"),
        ("PAY_FAIL", Retryable, "the deduction failed"),
        ("PAYERROR", Retryable, "the payment failed"),
        ("CLOSED", Retryable, "the order was closed unpaid"),
        ("REVOKED", Retryable, "the order was revoked"),
        // err_code: the payer's account, for now
        ("NOTENOUGH", Retryable, "the payer's balance is too low"),
        ("RULELIMIT", Retryable, "a payment limit of the payer's account was reached"),
        ("BANKERROR", Retryable, "the payer's bank is under maintenance"),
        ("ACCOUNTERROR", Retryable, "the payer's account is abnormal"),
        ("USER_ACCOUNT_ABNORMAL", Retryable, "the payer's account is abnormal"),
        ("ORDERCLOSED", Retryable, "the order was closed unpaid"),
        // err_code: for good
        ("CONTRACT_NOT_EXIST", Final, "the contract no longer exists at WeChat Pay"),
        ("CONTRACTERROR", Final, "the contract has expired at WeChat Pay"),
        ("CONTRACT_ERROR", Final, "the contract has expired at WeChat Pay"),
        ("USER_NOT_EXIST", Final, "the payer's WeChat account was cancelled"),
        ("TRADE_ERROR", Final, "WeChat Pay refused the order"),
        // err_code: not known whether the order was taken, or already taken
        ("SYSTEMERROR", Pending, "WeChat Pay's system error"),
        ("ORDERPAID", Pending, "the order number was paid before"),
        ("OUT_TRADE_NO_USED", Pending, "the order number was used before"),
        ("FREQUENCY_LIMITED", Pending, "too many requests"),
        ("ORDERNOTEXIST", NoOrder, "no order has this number"),
        // err_code: the merchant's setup
        ("SIGNERROR", Misconfigured, "the signature is wrong"),
        ("SIGN_ERROR", Misconfigured, "the signature is wrong"),
        ("PARAM_ERROR", Misconfigured, "a parameter is wrong"),
        ("LACK_PARAMS", Misconfigured, "a parameter is missing"),
        ("INVALID_REQUEST", Misconfigured, "the request is invalid"),
        ("NOAUTH", Misconfigured, "the merchant lacks the papay permission"),
        ("NO_AUTH", Misconfigured, "the merchant lacks the papay permission"),
        ("MCHID_NOT_EXIST", Misconfigured, "mch_id does not exist"),
        ("APPID_NOT_EXIST", Misconfigured, "appid does not exist"),
        ("APPID_MCHID_NOT_MATCH", Misconfigured, "appid and mch_id do not match"),
        ("XML_FORMAT_ERROR", Misconfigured, "the XML is malformed"),
        ("POST_DATA_EMPTY", Misconfigured, "the request is empty"),
        ("REQUIRE_POST_METHOD", Misconfigured, "the request must be a POST"),
        ("NOT_UTF8", Misconfigured, "the request is not UTF-8"),
        ("TRADE_TYPE_ERROR", Misconfigured, "trade_type is wrong"),
        ("PLAN_ID_NOT_EXIST", Misconfigured, "the papay template does not exist"),
    ]
};

/// The verdict and meaning of a code, from `CODES`.
pub fn verdict(code: &str) -> Option<(Verdict, &'static str)> {
    CODES.iter().find(|(c, ..)| *c == code).map(|(_, v, meaning)| (*v, *meaning))
}

/// Whether a `return_code=FAIL` message names a configuration problem (a signature, a
/// parameter, the merchant's ids) rather than a passing failure.
fn config_message(message: &str) -> bool {
    let upper = message.to_ascii_uppercase();
    ["SIGN", "PARAM", "MCH_ID", "APPID", "MISSING", "XML"].iter().any(|w| upper.contains(w))
        || ["签名", "参数", "商户号", "权限"].iter().any(|w| message.contains(w))
}

fn misconfigured(code: &str, detail: &str) -> ProviderOutcome {
    ProviderOutcome::Declined {
        code: code.to_string(),
        message: format!("the merchant's WeChat Pay configuration is wrong ({detail}); fix it before charging again"),
        retryable: false,
    }
}

/// The decline a code says no money moved by, or `None` when it does not say so (the caller
/// then waits for the query). `description` is WeChat Pay's own text.
fn decline(code: &str, description: &str) -> Option<ProviderOutcome> {
    let (verdict, meaning) = verdict(code)?;
    let message = if description.is_empty() { meaning.to_string() } else { format!("{meaning}: {description}") };
    match verdict {
        Verdict::Retryable | Verdict::Final => Some(ProviderOutcome::Declined {
            code: code.to_string(),
            message,
            retryable: verdict == Verdict::Retryable,
        }),
        Verdict::Misconfigured => Some(misconfigured(code, &message)),
        Verdict::Paid | Verdict::Pending | Verdict::NoOrder => None,
    }
}

impl WeChatPay {
    /// Checks the configuration: the v2 ids and key are present, and the v3 keys (if given)
    /// can be read and are not expired.
    pub fn new(config: WeChatPayConfig) -> Result<Self, ConfigError> {
        for (name, value) in [
            ("appid", &config.appid),
            ("mch_id", &config.mch_id),
            ("api_v2_key", &config.api_v2_key),
            ("base_url", &config.base_url),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Missing(name));
            }
        }
        if !(1..=3).contains(&config.notice_days) {
            return Err(ConfigError::Invalid {
                field: "notice_days",
                problem: format!("{} is outside 1 to 3, which WeChat Pay accepts", config.notice_days),
            });
        }
        let mut verifier = PlatformVerifier::default();
        let (mut platform_serial, mut platform_serial_public) = (String::new(), false);
        let signer = match &config.v3 {
            None => None,
            Some(v3c) => {
                if v3c.merchant_serial.is_empty() {
                    return Err(ConfigError::Missing("v3.merchant_serial"));
                }
                if v3c.platform_keys.is_empty() {
                    return Err(ConfigError::Missing("v3.platform_keys"));
                }
                let signer =
                    MerchantSigner::from_pem(&config.mch_id, &v3c.merchant_serial, &v3c.merchant_private_key_pem)
                        .map_err(|e| ConfigError::Invalid {
                            field: "v3.merchant_private_key_pem",
                            problem: e.to_string(),
                        })?;
                for key in &v3c.platform_keys {
                    let (serial, pem) = match key {
                        PlatformKey::PublicKey { id, pem } => (id.clone(), pem.clone()),
                        PlatformKey::Certificate { pem } => {
                            let what = "platform certificate";
                            let invalid = |e: super::cert::CertError| ConfigError::Invalid {
                                field: "v3.platform_keys",
                                problem: e.to_string(),
                            };
                            let info = CertInfo::from_pem(what, pem).map_err(invalid)?;
                            info.check(what, now_secs()).map_err(invalid)?;
                            (info.serial, info.public_key_pem)
                        }
                    };
                    verifier
                        .add_pem(&serial, &pem)
                        .map_err(|e| ConfigError::Invalid { field: "v3.platform_keys", problem: e.to_string() })?;
                    // The first public key, or else the first certificate.
                    let public = matches!(key, PlatformKey::PublicKey { .. });
                    if platform_serial.is_empty() || (public && !platform_serial_public) {
                        (platform_serial, platform_serial_public) = (serial, public);
                    }
                }
                Some(signer)
            }
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError::Invalid { field: "timeout", problem: e.to_string() })?;
        Ok(WeChatPay { config, http, signer, verifier, platform_serial })
    }

    pub fn config(&self) -> &WeChatPayConfig {
        &self.config
    }

    /// The parameters every v2 request carries.
    fn base_params(&self) -> Params {
        let mut p = Params::new();
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), nonce());
        p
    }

    /// Signs and posts a v2 request, then reads and verifies the answer: `Ok` holds a signed
    /// answer with `return_code=SUCCESS` (its `result_code` is the caller's to read).
    async fn post_v2(
        &self,
        path: &str,
        mut params: Params,
        required: &[&'static str],
        sign_type: SignType,
    ) -> Result<Params, CallError> {
        v2::require(&params, required).map_err(|e| match e {
            v2::Error::Missing(name) => CallError::Missing(name),
            other => CallError::Transport(other.to_string()),
        })?;
        v2::sign_in_place(&mut params, &self.config.api_v2_key, sign_type);
        let url = format!("{}{path}", self.config.base_url);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(v2::to_xml(&params))
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("{path}: {e}")))?;
        let status = response.status();
        let text =
            response.text().await.map_err(|e| CallError::Transport(format!("{path}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(CallError::Transport(format!("{path}: HTTP {status}")));
        }
        // WeChat Pay rejecting the signature: say exactly what was signed, so it can be
        // compared with what WeChat Pay's own signature tool makes of the same parameters.
        let signed_over = || {
            let text = format!(
                "the request was signed ({}) over \"{}&key=***\"",
                sign_type.as_str(),
                v2::string_to_sign(&params)
            );
            tracing::error!(path, signed = text, "WeChat Pay rejected the request's signature");
            text
        };
        match self.read_v2(path, &text, true, sign_type) {
            Err(CallError::Refused(m)) if m.to_ascii_uppercase().contains("SIGN") || m.contains("签名") => {
                Err(CallError::Refused(format!("{m}; {}", signed_over())))
            }
            Ok(mut answer) if code_of(&answer, "err_code") == "SIGNERROR" => {
                let des = format!("{}; {}", code_of(&answer, "err_code_des"), signed_over());
                answer.insert("err_code_des".into(), des);
                Ok(answer)
            }
            other => other,
        }
    }

    /// Reads a v2 answer to a request signed with `sign_type`, which WeChat Pay signs the
    /// answer with too (without naming it); `signed` says whether a missing `sign` is refused.
    fn read_v2(&self, path: &str, text: &str, signed: bool, sign_type: SignType) -> Result<Params, CallError> {
        let answer = v2::from_xml(text).map_err(|e| CallError::Transport(format!("{path}: unreadable answer: {e}")))?;
        if code_of(&answer, "return_code") != "SUCCESS" {
            // A refusal of the request itself is not signed.
            return Err(CallError::Refused(code_of(&answer, "return_msg")));
        }
        if signed || answer.get("sign").is_some_and(|s| !s.is_empty()) {
            v2::verify(&answer, &self.config.api_v2_key, sign_type)
                .map_err(|e| CallError::Transport(format!("{path}: the answer's signature does not verify: {e}")))?;
        }
        Ok(answer)
    }

    /// `POST /pay/paporderquery` (papay's own query) by `out_trade_no`.
    pub async fn paporderquery(&self, out_trade_no: &str) -> Lookup {
        self.lookup("/pay/paporderquery", "out_trade_no", out_trade_no).await
    }

    /// `POST /pay/orderquery` by `out_trade_no`: the only query that still finds a closed order.
    pub async fn orderquery(&self, out_trade_no: &str) -> Lookup {
        self.lookup("/pay/orderquery", "out_trade_no", out_trade_no).await
    }

    /// `POST /pay/orderquery` by WeChat Pay's `transaction_id`.
    pub async fn query_by_transaction_id(&self, transaction_id: &str) -> Lookup {
        self.lookup("/pay/orderquery", "transaction_id", transaction_id).await
    }

    async fn lookup(&self, path: &str, by: &'static str, value: &str) -> Lookup {
        let mut p = self.base_params();
        p.insert(by.into(), value.into());
        let answer = match self.post_v2(path, p, &["appid", "mch_id", "nonce_str", by], self.config.sign_type).await {
            Ok(answer) => answer,
            Err(CallError::Missing(name)) => {
                return Lookup::Pending { reason: format!("{path}: missing parameter {name}; nothing was sent") };
            }
            Err(CallError::Refused(message)) => {
                return Lookup::Pending { reason: format!("{path}: WeChat Pay refused the query: {message}") };
            }
            Err(CallError::Transport(reason)) => return Lookup::Pending { reason },
        };
        if code_of(&answer, "result_code") != "SUCCESS" {
            let code = code_of(&answer, "err_code");
            return if verdict(&code).is_some_and(|(v, _)| v == Verdict::NoOrder) {
                Lookup::NotFound
            } else {
                Lookup::Pending { reason: format!("{path}: {code}: {}", code_of(&answer, "err_code_des")) }
            };
        }
        // An answer about another order is no answer.
        let named = code_of(&answer, by);
        if !named.is_empty() && named != value {
            return Lookup::Pending { reason: format!("{path}: the answer names {by} {named}, not {value}") };
        }
        order_state(&answer, path)
    }

    /// `POST /papay/querycontract`.
    pub async fn querycontract(&self, contract: &ContractRef) -> Result<ContractInfo, ProviderError> {
        let mut p = self.base_params();
        p.insert("version".into(), "1.0".into());
        let required: &[&'static str] = match contract {
            ContractRef::Id(id) => {
                p.insert("contract_id".into(), id.clone());
                &["appid", "mch_id", "contract_id", "version"]
            }
            ContractRef::Code { plan_id, contract_code } => {
                p.insert("plan_id".into(), plan_id.clone());
                p.insert("contract_code".into(), contract_code.clone());
                &["appid", "mch_id", "plan_id", "contract_code", "version"]
            }
        };
        let a = self.contract_call("/papay/querycontract", p, required, self.config.sign_type).await?;
        let state = match code_of(&a, "contract_state").as_str() {
            "0" => ContractState::Signed,
            "1" => ContractState::NotSigned,
            "9" => ContractState::Signing,
            other => ContractState::Other(other.to_string()),
        };
        Ok(ContractInfo {
            contract_id: code_of(&a, "contract_id"),
            plan_id: code_of(&a, "plan_id"),
            contract_code: code_of(&a, "contract_code"),
            openid: code_of(&a, "openid"),
            display_account: code_of(&a, "contract_display_account"),
            state,
            signed_time: code_of(&a, "contract_signed_time"),
            expired_time: code_of(&a, "contract_expired_time"),
            terminated_time: code_of(&a, "contract_terminated_time"),
            termination_mode: code_of(&a, "contract_termination_mode"),
            termination_remark: code_of(&a, "contract_termination_remark"),
        })
    }

    /// `POST /papay/deletecontract` (MD5, as documented). A contract already gone counts as
    /// terminated.
    pub async fn deletecontract(&self, contract: &ContractRef, remark: &str) -> Result<(), ProviderError> {
        let mut p = self.base_params();
        p.insert("version".into(), "1.0".into());
        let remark = if remark.is_empty() { "terminated by the merchant" } else { remark };
        p.insert("contract_termination_remark".into(), remark.chars().take(512).collect());
        let required: &[&'static str] = match contract {
            ContractRef::Id(id) => {
                p.insert("contract_id".into(), id.clone());
                &["appid", "mch_id", "contract_id", "contract_termination_remark", "version"]
            }
            ContractRef::Code { plan_id, contract_code } => {
                p.insert("plan_id".into(), plan_id.clone());
                p.insert("contract_code".into(), contract_code.clone());
                &["appid", "mch_id", "plan_id", "contract_code", "contract_termination_remark", "version"]
            }
        };
        match self.contract_call("/papay/deletecontract", p, required, SignType::Md5).await {
            Ok(_) => Ok(()),
            Err(ProviderError::Refused { code, .. }) if code == "CONTRACT_NOT_EXIST" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A v2 contract call whose `result_code` must be SUCCESS.
    async fn contract_call(
        &self,
        path: &str,
        p: Params,
        required: &[&'static str],
        sign_type: SignType,
    ) -> Result<Params, ProviderError> {
        let answer = self.post_v2(path, p, required, sign_type).await.map_err(|e| call_error(path, e))?;
        if code_of(&answer, "result_code") != "SUCCESS" {
            return Err(ProviderError::Refused {
                code: code_of(&answer, "err_code"),
                message: code_of(&answer, "err_code_des"),
            });
        }
        Ok(answer)
    }

    /// The signing parameters `entrustweb`, `h5entrustweb` and `preentrustweb` share.
    fn signing_params(&self, request: &SigningRequest) -> Params {
        let mut p = Params::new();
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        let plan_id =
            if request.provider_plan_id.is_empty() { &self.config.plan_id } else { &request.provider_plan_id };
        p.insert("plan_id".into(), plan_id.clone());
        p.insert("contract_code".into(), request.contract_code.clone());
        p.insert("request_serial".into(), request.request_serial.to_string());
        p.insert("contract_display_account".into(), request.display_account.clone());
        p.insert("notify_url".into(), request.notify_url.clone());
        p.insert("version".into(), "1.0".into());
        p.insert("timestamp".into(), now_secs().to_string());
        p
    }

    const SIGNING_REQUIRED: &[&'static str] = &[
        "appid",
        "mch_id",
        "plan_id",
        "contract_code",
        "request_serial",
        "contract_display_account",
        "notify_url",
        "version",
        "timestamp",
    ];

    /// The `GET /papay/entrustweb` address (MD5 only): the payer's browser opens it inside WeChat.
    pub fn entrustweb_url(&self, request: &SigningRequest) -> Result<String, ProviderError> {
        let mut p = self.signing_params(request);
        if !request.return_url.is_empty() {
            p.insert("return_web".into(), "1".into());
        }
        v2::require(&p, Self::SIGNING_REQUIRED).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        v2::sign_in_place(&mut p, &self.config.api_v2_key, SignType::Md5);
        self.signing_address("/papay/entrustweb", &p)
    }

    fn signing_address(&self, path: &str, p: &Params) -> Result<String, ProviderError> {
        let url = format!("{}{path}", self.config.signing_base_url);
        reqwest::Url::parse_with_params(&url, p.iter())
            .map(String::from)
            .map_err(|e| ProviderError::Invalid(format!("signing_base_url {url:?}: {e}")))
    }

    /// `GET /papay/h5entrustweb` (HMAC-SHA256): WeChat Pay answers a `redirect_url`, valid ten
    /// minutes and once. The documented answer carries no `sign`; one that does is verified.
    pub async fn h5entrustweb(&self, request: &SigningRequest) -> Result<String, ProviderError> {
        let path = "/papay/h5entrustweb";
        let mut p = self.signing_params(request);
        p.insert("clientip".into(), request.client_ip.clone());
        let mut required = Self::SIGNING_REQUIRED.to_vec();
        required.push("clientip");
        v2::require(&p, &required).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        v2::sign_in_place(&mut p, &self.config.api_v2_key, SignType::HmacSha256);
        let url = self.signing_address(path, &p)?;
        let response =
            self.http.get(&url).send().await.map_err(|e| ProviderError::Transport(format!("{path}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ProviderError::Transport(format!("{path}: {e}")))?;
        if !status.is_success() {
            return Err(ProviderError::Transport(format!("{path}: HTTP {status}")));
        }
        let answer = self.read_v2(path, &text, false, SignType::HmacSha256).map_err(|e| call_error(path, e))?;
        if code_of(&answer, "result_code") != "SUCCESS" {
            return Err(ProviderError::Refused {
                code: code_of(&answer, "result_code"),
                message: code_of(&answer, "result_msg"),
            });
        }
        let redirect = code_of(&answer, "redirect_url");
        if redirect.is_empty() {
            return Err(ProviderError::Transport(format!("{path}: the answer has no redirect_url")));
        }
        Ok(redirect)
    }

    /// `POST /papay/preentrustweb` (APP signing): the id the APP hands to the WeChat SDK.
    pub async fn preentrustweb(&self, request: &SigningRequest) -> Result<PreEntrust, ProviderError> {
        let path = "/papay/preentrustweb";
        let mut p = self.signing_params(request);
        p.insert("nonce_str".into(), nonce());
        let a = self.contract_call(path, p, Self::SIGNING_REQUIRED, self.config.sign_type).await?;
        let id = code_of(&a, "pre_entrustweb_id");
        if id.is_empty() {
            return Err(ProviderError::Transport(format!("{path}: the answer has no pre_entrustweb_id")));
        }
        Ok(PreEntrust {
            pre_entrustweb_id: id,
            miniprogram_username: code_of(&a, "miniprogram_username"),
            miniprogram_path: code_of(&a, "miniprogram_path"),
        })
    }

    fn signer(&self) -> Result<&MerchantSigner, ProviderError> {
        self.signer.as_ref().ok_or_else(|| {
            ProviderError::Invalid(
                "this call is API v3: the WeChat Pay configuration needs v3 settings (merchant serial, private key, platform keys)"
                    .into(),
            )
        })
    }

    /// Signs and sends a v3 request, then verifies the answer's signature (any status).
    async fn call_v3(&self, method: reqwest::Method, path: &str, body: &str) -> Result<V3Answer, ProviderError> {
        let signer = self.signer()?;
        let (timestamp, nonce) = (now_secs(), nonce());
        let authorization = signer.authorization(method.as_str(), path, body, timestamp, &nonce);
        let url = format!("{}{path}", self.config.v3_base_url);
        let mut request = self
            .http
            .request(method, &url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header("Wechatpay-Serial", &self.platform_serial)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "autodebit-provider");
        if !body.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| ProviderError::Transport(format!("{path}: {e}")))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_default()
        };
        let (serial, ts, answer_nonce, signature) = (
            header("Wechatpay-Serial"),
            header("Wechatpay-Timestamp"),
            header("Wechatpay-Nonce"),
            header("Wechatpay-Signature"),
        );
        let text = response.text().await.map_err(|e| ProviderError::Transport(format!("{path}: {e}")))?;
        let ts: i64 = ts.parse().map_err(|_| {
            ProviderError::Transport(format!("{path}: HTTP {status}, unsigned answer (no Wechatpay-Timestamp): {text}"))
        })?;
        self.verifier
            .verify(&serial, ts, &answer_nonce, &text, &signature, now_secs())
            .map_err(|e| ProviderError::Transport(format!("{path}: HTTP {status}, the answer does not verify: {e}")))?;
        Ok(V3Answer { status, body: text })
    }

    /// `POST /v3/papay/contracts/{contract_id}/fail-notify`: tells the payer a deduction failed,
    /// so they can top up before the next attempt.
    pub async fn fail_notify(&self, provider_contract_id: &str) -> Result<(), ProviderError> {
        let body = serde_json::json!({"mchid": self.config.mch_id, "appid": self.config.appid}).to_string();
        let path = format!("/v3/papay/contracts/{}/fail-notify", path_segment("contract_id", provider_contract_id)?);
        let answer = self.call_v3(reqwest::Method::POST, &path, &body).await?;
        v3_done(&path, answer)
    }
}

/// An id as one path segment (`field` names it): WeChat Pay's ids are letters and digits.
fn path_segment<'a>(field: &str, id: &'a str) -> Result<&'a str, ProviderError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ProviderError::Invalid(format!("{field} {id:?} is not a WeChat Pay id")));
    }
    Ok(id)
}

/// A v3 error body's `code` and `message`.
fn v3_error(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    (text("code"), text("message"))
}

/// A v3 call that answers 2xx without content when done. `RESOURCE_ALREADY_EXISTS` (the same
/// notice was passed before) is done too.
fn v3_done(path: &str, answer: V3Answer) -> Result<(), ProviderError> {
    if (200..300).contains(&answer.status) {
        return Ok(());
    }
    let (code, message) = v3_error(&answer.body);
    match (answer.status, code.as_str()) {
        (_, "RESOURCE_ALREADY_EXISTS") => Ok(()),
        (500.., _) | (_, "SYSTEM_ERROR") | (_, "FREQUENCY_LIMITED") => {
            Err(ProviderError::Transport(format!("{path}: HTTP {}: {code}: {message}", answer.status)))
        }
        _ if code.is_empty() => {
            Err(ProviderError::Transport(format!("{path}: HTTP {}: {}", answer.status, answer.body)))
        }
        _ => Err(ProviderError::Refused { code, message }),
    }
}

impl WeChatPay {
    /// `POST /pay/downloadbill`: the day's statement of every trade and refund (`bill_type=ALL`),
    /// asked for gzip (`tar_type=GZIP`) and written into `sink` decompressed, a chunk at a time
    /// as it arrives. A refusal comes as signed-less XML (`return_code=FAIL`, e.g. `No Bill
    /// Exist` before the statement is made, from 9 a.m. the next day); it is `Refused` with
    /// WeChat Pay's message and `error_code`.
    pub async fn downloadbill(
        &self,
        date: chrono::NaiveDate,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<(), ProviderError> {
        const PATH: &str = "/pay/downloadbill";
        let mut params = self.base_params();
        params.insert("bill_date".into(), date.format("%Y%m%d").to_string());
        params.insert("bill_type".into(), "ALL".into());
        params.insert("tar_type".into(), "GZIP".into());
        if self.config.sign_type != SignType::Md5 {
            params.insert("sign_type".into(), self.config.sign_type.as_str().into());
        }
        v2::sign_in_place(&mut params, &self.config.api_v2_key, self.config.sign_type);
        let transport = |e: &dyn std::fmt::Display| ProviderError::Transport(format!("{PATH}: {e}"));
        let mut response = self
            .http
            .post(format!("{}{PATH}", self.config.base_url))
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .timeout(self.config.timeout.max(Duration::from_secs(60)))
            .body(v2::to_xml(&params))
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if !response.status().is_success() {
            return Err(ProviderError::Transport(format!("{PATH}: HTTP {}", response.status())));
        }
        let mut first = Vec::new();
        while first.len() < 5 {
            match response.chunk().await.map_err(|e| transport(&e))? {
                Some(c) => first.extend_from_slice(&c),
                None => break,
            }
        }
        if first.starts_with(b"<xml") {
            let mut text = first;
            while let Some(c) = response.chunk().await.map_err(|e| transport(&e))? {
                text.extend_from_slice(&c);
            }
            let answer = v2::from_xml(&String::from_utf8_lossy(&text)).map_err(|e| transport(&e))?;
            return Err(ProviderError::Refused {
                code: match code_of(&answer, "error_code") {
                    c if c.is_empty() => code_of(&answer, "return_code"),
                    c => c,
                },
                message: code_of(&answer, "return_msg"),
            });
        }
        let write_err = |e: std::io::Error| ProviderError::Transport(format!("{PATH}: writing the statement: {e}"));
        if first.starts_with(&[0x1f, 0x8b]) {
            let mut gz = flate2::write::GzDecoder::new(sink);
            gz.write_all(&first).map_err(write_err)?;
            while let Some(c) = response.chunk().await.map_err(|e| transport(&e))? {
                gz.write_all(&c).map_err(write_err)?;
            }
            gz.try_finish().map_err(write_err)?;
        } else {
            sink.write_all(&first).map_err(write_err)?;
            while let Some(c) = response.chunk().await.map_err(|e| transport(&e))? {
                sink.write_all(&c).map_err(write_err)?;
            }
        }
        Ok(())
    }
}

/// A profit-sharing order's answer: `FINISHED` with every receiver `SUCCESS` is done; a
/// receiver `CLOSED` fails it (with its `fail_reason`); `PROCESSING` is asked again.
fn share_outcome(path: &str, answer: &V3Answer) -> crate::ShareOutcome {
    use crate::ShareOutcome;
    if !(200..300).contains(&answer.status) {
        let (code, message) = v3_error(&answer.body);
        return match (answer.status, code.as_str()) {
            (500.., _) | (_, "SYSTEM_ERROR") | (_, "FREQUENCY_LIMITED") | (_, "RATELIMIT_EXCEED") | (_, "") => {
                ShareOutcome::Pending { reason: format!("{path}: HTTP {}: {code} {message}", answer.status) }
            }
            _ => ShareOutcome::Failed { code, message },
        };
    }
    let v: serde_json::Value = match serde_json::from_str(&answer.body) {
        Ok(v) => v,
        Err(e) => return ShareOutcome::Pending { reason: format!("{path}: unreadable answer: {e}") },
    };
    let order_id = v["order_id"].as_str().unwrap_or_default().to_string();
    let receivers = v["receivers"].as_array().cloned().unwrap_or_default();
    if let Some(closed) = receivers.iter().find(|r| r["result"] == "CLOSED") {
        return ShareOutcome::Failed {
            code: closed["fail_reason"].as_str().unwrap_or("CLOSED").to_string(),
            message: format!("receiver {} was not paid", closed["account"].as_str().unwrap_or_default()),
        };
    }
    match v["state"].as_str() {
        Some("FINISHED") if receivers.iter().all(|r| r["result"] == "SUCCESS") => ShareOutcome::Finished { order_id },
        other => ShareOutcome::Pending { reason: format!("{path}: order {order_id} is {}", other.unwrap_or("?")) },
    }
}

fn call_error(path: &str, e: CallError) -> ProviderError {
    match e {
        CallError::Missing(name) => {
            ProviderError::Invalid(format!("{path}: missing parameter {name}: required before the request is sent"))
        }
        CallError::Refused(message) => ProviderError::Refused { code: "FAIL".into(), message },
        CallError::Transport(reason) => ProviderError::Transport(reason),
    }
}

fn fen(amount: Money) -> Result<i64, String> {
    if amount.currency() != Currency::CNY {
        return Err(format!("WeChat Pay papay charges CNY only, not {}", amount.currency()));
    }
    if amount.minor_units() <= 0 {
        return Err(format!("amount {} fen must be positive", amount.minor_units()));
    }
    Ok(amount.minor_units())
}

impl Provider for WeChatPay {
    fn name(&self) -> &'static str {
        "wechatpay"
    }

    /// `POST /pay/pappayapply`. Acceptance is `Unknown` (the result comes by callback or query);
    /// a refusal that proves no money moved is `Declined`; anything else is `Unknown`.
    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        Box::pin(async move {
            let path = "/pay/pappayapply";
            let total_fee = match fen(attempt.amount) {
                Ok(fen) => fen,
                Err(message) => {
                    return ProviderOutcome::Declined { code: "INVALID_AMOUNT".into(), message, retryable: false };
                }
            };
            let contract_id = if attempt.provider_contract_id.is_empty() {
                attempt.contract_id.to_string()
            } else {
                attempt.provider_contract_id.clone()
            };
            let mut p = self.base_params();
            p.insert("body".into(), self.config.body.clone());
            p.insert("out_trade_no".into(), attempt.out_trade_no.clone());
            p.insert("total_fee".into(), total_fee.to_string());
            p.insert("spbill_create_ip".into(), self.config.spbill_create_ip.clone());
            p.insert("notify_url".into(), self.config.notify_url.clone());
            p.insert("trade_type".into(), "PAP".into());
            p.insert("contract_id".into(), contract_id);
            if self.config.profit_sharing {
                p.insert("profit_sharing".into(), "Y".into());
            }
            const REQUIRED: &[&str] = &[
                "appid",
                "mch_id",
                "nonce_str",
                "body",
                "out_trade_no",
                "total_fee",
                "spbill_create_ip",
                "notify_url",
                "trade_type",
                "contract_id",
            ];
            let answer = match self.post_v2(path, p, REQUIRED, self.config.sign_type).await {
                Ok(answer) => answer,
                Err(CallError::Missing(name)) => {
                    return misconfigured(
                        "MISSING_PARAMETER",
                        &format!("{path}: missing parameter {name}; nothing was sent"),
                    );
                }
                Err(CallError::Refused(message)) if config_message(&message) => {
                    return misconfigured("FAIL", &format!("{path}: WeChat Pay refused the request: {message}"));
                }
                Err(CallError::Refused(message)) => {
                    return ProviderOutcome::Unknown { reason: format!("{path}: WeChat Pay answered FAIL: {message}") };
                }
                Err(CallError::Transport(reason)) => return ProviderOutcome::Unknown { reason },
            };
            if code_of(&answer, "result_code") == "SUCCESS" {
                // Only an answer that itself states the money moved is a success.
                let transaction_id = code_of(&answer, "transaction_id");
                if code_of(&answer, "trade_state") == "SUCCESS" && !transaction_id.is_empty() {
                    return ProviderOutcome::Succeeded { transaction_id };
                }
                return ProviderOutcome::Unknown { reason: ACCEPTED.into() };
            }
            let (code, description) = (code_of(&answer, "err_code"), code_of(&answer, "err_code_des"));
            decline(&code, &description).unwrap_or_else(|| ProviderOutcome::Unknown {
                // ORDERPAID, OUT_TRADE_NO_USED, SYSTEMERROR, USERPAYING, FREQUENCY_LIMITED and
                // codes not known here: the query tells.
                reason: format!("{path}: {code}: {description}"),
            })
        })
    }

    /// `paporderquery` by `out_trade_no`; an order it does not find is looked for with
    /// `orderquery` too (only that one finds closed orders) before it counts as never sent.
    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            match self.paporderquery(&attempt.out_trade_no).await {
                Lookup::NotFound => self.orderquery(&attempt.out_trade_no).await,
                other => other,
            }
        })
    }

    /// The v3 refund (`POST /v3/refund/domestic/refunds`). WeChat Pay's v2 refund
    /// (`/secapi/pay/refund`) needs the merchant's client certificate on the TLS connection;
    /// the v3 one needs only the request signature this provider already makes for the notice,
    /// and refunds orders paid through any API version, papay's v2 deductions included.
    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let path = "/v3/refund/domestic/refunds";
            let failed = |code: &str, message: String| RefundOutcome::Failed { code: code.into(), message };
            let (total, amount) = match (fen(refund.charge_amount), fen(refund.refund_amount)) {
                (Ok(t), Ok(a)) => (t, a),
                (Err(m), _) | (_, Err(m)) => return failed("INVALID_AMOUNT", m),
            };
            if amount > total {
                return failed("INVALID_AMOUNT", format!("refund of {amount} fen exceeds the charge of {total} fen"));
            }
            if refund.out_refund_no.is_empty() {
                return failed(
                    "PARAM_ERROR",
                    "missing parameter out_refund_no: required before the request is sent".into(),
                );
            }
            let mut body = serde_json::json!({
                "out_refund_no": refund.out_refund_no,
                "amount": {"refund": amount, "total": total, "currency": "CNY"},
            });
            if !refund.transaction_id.is_empty() {
                body["transaction_id"] = refund.transaction_id.clone().into();
            } else if !refund.out_trade_no.is_empty() {
                body["out_trade_no"] = refund.out_trade_no.clone().into();
            } else {
                return failed(
                    "PARAM_ERROR",
                    "missing parameter transaction_id or out_trade_no: required before the request is sent".into(),
                );
            }
            if !refund.reason.is_empty() {
                body["reason"] = refund.reason.chars().take(80).collect::<String>().into();
            }
            if !self.config.refund_notify_url.is_empty() {
                body["notify_url"] = self.config.refund_notify_url.clone().into();
            }
            let answer = match self.call_v3(reqwest::Method::POST, path, &body.to_string()).await {
                Ok(answer) => answer,
                Err(ProviderError::Invalid(message)) => return failed("CONFIG", message),
                Err(e) => return RefundOutcome::Unknown { reason: e.to_string() },
            };
            if !(200..300).contains(&answer.status) {
                let (code, message) = v3_error(&answer.body);
                return match code.as_str() {
                    _ if answer.status >= 500 => {
                        RefundOutcome::Unknown { reason: format!("{path}: HTTP {}: {code}: {message}", answer.status) }
                    }
                    "" | "SYSTEM_ERROR" | "FREQUENCY_LIMITED" => {
                        RefundOutcome::Unknown { reason: format!("{path}: HTTP {}: {code}: {message}", answer.status) }
                    }
                    "NOT_ENOUGH" => failed(
                        &code,
                        format!(
                            "{message}: the merchant's balance is too low; top up, then ask again with the same out_refund_no"
                        ),
                    ),
                    _ => failed(&code, message),
                };
            }
            let v: serde_json::Value = match serde_json::from_str(&answer.body) {
                Ok(v) => v,
                Err(e) => return RefundOutcome::Unknown { reason: format!("{path}: unreadable answer: {e}") },
            };
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            if text("out_refund_no") != refund.out_refund_no {
                return RefundOutcome::Unknown { reason: format!("{path}: the answer names another out_refund_no") };
            }
            let refund_id = text("refund_id");
            match text("status").as_str() {
                "SUCCESS" if !refund_id.is_empty() => RefundOutcome::Succeeded { refund_id },
                "PROCESSING" | "SUCCESS" => {
                    RefundOutcome::Unknown { reason: format!("{path}: refund {refund_id} is processing") }
                }
                "ABNORMAL" => failed(
                    "ABNORMAL",
                    format!(
                        "refund {refund_id} could not reach the payer's account; handle it in the merchant platform"
                    ),
                ),
                "CLOSED" => failed("CLOSED", format!("refund {refund_id} was closed")),
                other => RefundOutcome::Unknown { reason: format!("{path}: status {other:?}") },
            }
        })
    }

    /// `POST /v3/papay/contracts/{contract_id}/notify` (WeChat Pay's contract id, or the
    /// platform's where none is known); `RESOURCE_ALREADY_EXISTS` (passed before with the same
    /// parameters) is success.
    fn notify<'a>(&'a self, notice: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let amount = fen(notice.amount).map_err(ProviderError::Invalid)?;
            // Like deductions: the platform's id where no signing notice gave WeChat Pay's own.
            let platform_id = notice.contract_id.to_string();
            let contract = if notice.provider_contract_id.is_empty() {
                platform_id.as_str()
            } else {
                &notice.provider_contract_id
            };
            let path = format!("/v3/papay/contracts/{}/notify", path_segment("contract_id", contract)?);
            let body = serde_json::json!({
                "mchid": self.config.mch_id,
                "appid": self.config.appid,
                "deduct_duration": {"count": self.config.notice_days, "unit": "DAY"},
                "estimated_amount": {"amount": amount, "currency": "CNY"},
            })
            .to_string();
            let answer = self.call_v3(reqwest::Method::POST, &path, &body).await?;
            v3_done(&path, answer)
        })
    }

    /// `deletecontract` by the contract's WeChat Pay id (the platform's id when it has none).
    fn terminate<'a>(&'a self, termination: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let id = if termination.provider_contract_id.is_empty() {
                termination.contract_id.to_string()
            } else {
                termination.provider_contract_id.clone()
            };
            self.deletecontract(&ContractRef::Id(id), &termination.remark).await
        })
    }

    /// Web: the signed `entrustweb` address. H5: the `redirect_url` WeChat Pay answers to
    /// `h5entrustweb`. WithPayment (APP signing): there is no web address; the answer is the
    /// `pre_entrustweb_id` of `preentrustweb`, which the APP hands to the WeChat SDK (use
    /// `preentrustweb` for the mini-program fields). Paying and signing in one order
    /// (`/pay/contractorder`) needs an order this request does not carry.
    fn signing_url<'a>(&'a self, request: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            match request.channel {
                SigningChannel::Web => self.entrustweb_url(request),
                SigningChannel::H5 => self.h5entrustweb(request).await,
                SigningChannel::WithPayment => self.preentrustweb(request).await.map(|p| p.pre_entrustweb_id),
            }
        })
    }

    /// `POST /v3/profitsharing/orders` (the deduction was made with `profit_sharing=Y`): each
    /// receiver a `MERCHANT_ID` when its account is all digits (a merchant number), else a
    /// `PERSONAL_OPENID`; what is not shared is unfrozen to the merchant (`unfreeze_unsplit`).
    /// An order made before (`out_order_no` again) is looked up instead
    /// (`GET /v3/profitsharing/orders/{out_order_no}`).
    fn share<'a>(&'a self, request: &'a crate::ShareRequest) -> BoxFuture<'a, crate::ShareOutcome> {
        Box::pin(async move {
            let path = "/v3/profitsharing/orders";
            let receivers: Vec<serde_json::Value> = request
                .receivers
                .iter()
                .map(|(account, amount)| {
                    let kind = if !account.is_empty() && account.bytes().all(|b| b.is_ascii_digit()) {
                        "MERCHANT_ID"
                    } else {
                        "PERSONAL_OPENID"
                    };
                    serde_json::json!({"type": kind, "account": account, "amount": amount,
                                       "description": format!("分账 {}", request.charge_id)})
                })
                .collect();
            let body = serde_json::json!({
                "appid": self.config.appid,
                "transaction_id": request.transaction_id,
                "out_order_no": request.out_order_no,
                "receivers": receivers,
                "unfreeze_unsplit": true,
            })
            .to_string();
            let answer = match self.call_v3(reqwest::Method::POST, path, &body).await {
                Ok(a) => a,
                Err(e) => return crate::ShareOutcome::Pending { reason: e.to_string() },
            };
            let answer = if answer.status == 400 && v3_error(&answer.body).0 == "RESOURCE_ALREADY_EXISTS" {
                let query = format!(
                    "{path}/{}?transaction_id={}",
                    path_segment("out_order_no", &request.out_order_no).unwrap_or_default(),
                    request.transaction_id
                );
                match self.call_v3(reqwest::Method::GET, &query, "").await {
                    Ok(a) => a,
                    Err(e) => return crate::ShareOutcome::Pending { reason: e.to_string() },
                }
            } else {
                answer
            };
            share_outcome(path, &answer)
        })
    }

    fn shares_payments(&self, _: &str) -> bool {
        self.config.profit_sharing
    }

    fn statement_account(&self, _: &str) -> String {
        self.config.mch_id.clone()
    }

    fn statement<'a>(
        &'a self,
        request: &'a crate::StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.downloadbill(request.date, sink))
    }
}

/// What an order's state says of its attempt — in a query's answer or a deduction result
/// notice (`trade_state`, `transaction_id`, `err_code`), read through `CODES`; `origin` names
/// where it came from. A result notice may leave `trade_state` out (WeChat Pay's own examples
/// do): then `result_code=SUCCESS` with a `transaction_id` is a payment, and `FAIL` is read by
/// its `err_code`.
pub fn order_state(answer: &Params, origin: &str) -> Lookup {
    let transaction_id = code_of(answer, "transaction_id");
    let err_code = code_of(answer, "err_code");
    let mut state = code_of(answer, "trade_state");
    if state.is_empty() {
        match code_of(answer, "result_code").as_str() {
            "SUCCESS" if !transaction_id.is_empty() => state = "SUCCESS".into(),
            "FAIL" => state = err_code.clone(),
            _ => {}
        }
    }
    let description = [code_of(answer, "trade_state_desc"), code_of(answer, "err_code_des")]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match verdict(&state) {
        Some((Verdict::Paid, _)) if !transaction_id.is_empty() => {
            Lookup::Ended(ProviderOutcome::Succeeded { transaction_id })
        }
        Some((Verdict::Paid, _)) => Lookup::Pending { reason: format!("{origin}: {state} without a transaction_id") },
        _ => match decline(&state, &description) {
            // Ended unpaid: a known cause decides whether another attempt may pass; otherwise
            // the state does.
            Some(ended) => Lookup::Ended(decline(&err_code, &description).unwrap_or(ended)),
            None => Lookup::Pending { reason: format!("{origin}: trade_state {state:?}") },
        },
    }
}

/// Shows the configuration, whose `Debug` leaves the keys out.
impl std::fmt::Debug for WeChatPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatPay").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Why a v3 callback was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// A header or the envelope is missing or malformed (the first bad part named).
    #[error("{0}")]
    Malformed(String),
    /// The signature, its key serial or its timestamp does not hold.
    #[error(transparent)]
    Signature(#[from] super::v3::Error),
    /// The resource does not decrypt under the APIv3 key.
    #[error("{0}")]
    Undecryptable(String),
    #[error("the account has no API v3 settings, so its v3 callbacks cannot be checked")]
    NoV3,
}

impl WeChatPay {
    /// Checks a v3 callback — `Wechatpay-Serial`, `-Timestamp` (five minutes of skew at most),
    /// `-Nonce` and `-Signature` over its body — and opens its resource with the APIv3 key:
    /// the envelope and the resource's JSON text.
    pub fn open_callback(
        &self,
        serial: &str,
        timestamp: &str,
        nonce: &str,
        signature: &str,
        body: &str,
    ) -> Result<(super::v3::Notification, String), CallbackError> {
        let v3c = self.config.v3.as_ref().ok_or(CallbackError::NoV3)?;
        for (name, value) in
            [("Wechatpay-Serial", serial), ("Wechatpay-Nonce", nonce), ("Wechatpay-Signature", signature)]
        {
            if value.is_empty() {
                return Err(CallbackError::Malformed(format!("header {name} is missing")));
            }
        }
        let ts: i64 = timestamp.parse().map_err(|_| {
            CallbackError::Malformed(format!("header Wechatpay-Timestamp {timestamp:?} is not a number"))
        })?;
        self.verifier.verify(serial, ts, nonce, body, signature, now_secs())?;
        let notification =
            super::v3::Notification::parse(body.as_bytes()).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        let resource = notification.open(&v3c.api_v3_key).map_err(|e| CallbackError::Undecryptable(e.to_string()))?;
        Ok((notification, resource))
    }
}

/// Verifies the `sign` of a v2 callback and returns its parameters: a deduction result is
/// signed in the sign type of its `pappayapply`, a signing notice in MD5, neither naming it.
/// The acknowledgement WeChat Pay waits for is `CALLBACK_ACK`.
pub fn read_callback(xml: &str, api_v2_key: &str, sign_type: SignType) -> Result<Params, v2::Error> {
    let p = v2::from_xml(xml)?;
    v2::verify(&p, api_v2_key, sign_type)?;
    Ok(p)
}

/// The answer that stops WeChat Pay redelivering a v2 callback.
pub const CALLBACK_ACK: &str =
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
