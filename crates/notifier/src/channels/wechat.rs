//! A client of WeChat's server API for messages: official-account template messages
//! (`cgi-bin/message/template/send`) and mini-program subscribe messages
//! (`cgi-bin/message/subscribe/send`), with the access token from `cgi-bin/stable_token`.
//!
//! Tokens are cached per app id and fetched again when less than five minutes of them remain by
//! the platform clock (the docs: in normal mode the platform renews a token in its last five
//! minutes, and old and new both work meanwhile). Callers of one app wait on one fetch.
//!
//! A send answered with an invalid or expired token (40001, 40014, 42001) gets one new token and
//! is sent once more. The new token comes from normal mode first — it is the current token if
//! another process refreshed ours — and from forced refresh only when normal mode hands back the
//! token just rejected: WeChat limits forced refreshes to 20 a day, 30 seconds apart.
//!
//! The answer is [`SendResult`]: `Sent`; `Refused` when the payer cannot be reached on this
//! channel (template: 43004 not following the account, 40003 not an openid of it; subscribe:
//! 43101 refused or cancelled the subscription, 40003), so the caller tries the next channel;
//! `Failed`, retryable for -1 (system busy), 45011 (minute quota), a 5xx or 429, a garbled answer
//! and transport errors, not for the other codes. Secrets and tokens are never logged: the
//! `Debug` impls leave them out and transport errors are reported without their URL.
use autodebit_runtime::PlatformClock;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A token with less than this left is replaced before use.
const REFRESH_MARGIN_MS: i64 = 5 * 60_000;

/// Errcodes that mean the access token is not (or no longer) good.
const INVALID_TOKEN: [i64; 3] = [40001, 40014, 42001];
/// 40003 invalid openid: not a user of this account.
const INVALID_OPENID: i64 = 40003;
/// 43004 require subscribe: the payer does not follow the official account.
const NOT_FOLLOWING: i64 = 43004;
/// 43101: the payer refused the subscribe message, or cancelled the subscription.
const SUBSCRIPTION_REFUSED: i64 = 43101;
/// -1 system error: WeChat is busy; try again later.
const SYSTEM_BUSY: i64 = -1;
/// 45011: the per-minute quota is used up; try again next minute.
const MINUTE_QUOTA: i64 = 45011;

/// The app's credentials: the official account's or the mini program's app id and secret.
#[derive(Clone, Copy)]
pub struct WechatApp<'a> {
    pub app_id: &'a str,
    pub secret: &'a str,
}

impl std::fmt::Debug for WechatApp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatApp").field("app_id", &self.app_id).field("secret", &"***").finish()
    }
}

/// Which message a send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// An official account's template message.
    Template,
    /// A mini program's subscribe message.
    Subscribe,
}

/// One message to one payer.
#[derive(Debug, Clone, Copy)]
pub struct WechatMessage<'a> {
    /// The payer's openid under this app.
    pub touser: &'a str,
    pub template_id: &'a str,
    /// Each template keyword's value, sent as `data: {keyword: {"value": …}}`.
    pub fields: &'a BTreeMap<String, String>,
    /// Where a tap leads: the template message's `url`, or the subscribe message's `page` (a page
    /// of the mini program, `index?foo=bar`). Empty for none.
    pub link: &'a str,
    /// The subscribe message's language: `zh_CN`, `en_US`, `zh_HK` or `zh_TW`; empty for WeChat's
    /// default (`zh_CN`). Template messages have none.
    pub lang: &'a str,
    /// The template message's `client_msg_id`: WeChat delivers one message per openid and id
    /// within ten minutes, so a send retried after a lost answer is not delivered twice. Subscribe
    /// messages have none.
    pub dedup_id: Option<&'a str>,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// WeChat took the message. Template sends answer a msgid; the subscribe send's documented
    /// answer has none.
    Sent { msgid: Option<String> },
    /// The payer cannot be reached on this channel; the caller falls back to the next one.
    Refused { errcode: i64, errmsg: String },
    /// The message was not sent; `retryable` says whether the same send may pass later.
    Failed { retryable: bool, detail: String },
}

/// The client. Clones share the token cache.
#[derive(Clone)]
pub struct WechatApi {
    http: reqwest::Client,
    base_url: String,
    clock: PlatformClock,
    tokens: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>>,
}

impl std::fmt::Debug for WechatApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let apps = self.tokens.lock().map(|t| t.len()).unwrap_or_default();
        f.debug_struct("WechatApi").field("base_url", &self.base_url).field("cached_apps", &apps).finish()
    }
}

/// A cached access token and when it expires (platform clock, milliseconds).
#[derive(Clone)]
struct Token {
    value: String,
    expires_at_ms: i64,
}

/// A send endpoint's answer, read.
enum Answer {
    Ok { msgid: Option<String> },
    Err { errcode: i64, errmsg: String },
    Failed { retryable: bool, detail: String },
}

impl WechatApi {
    /// A client calling `base_url` (`https://api.weixin.qq.com`, or a fake in tests) through
    /// `http`, which should carry a timeout.
    pub fn new(http: reqwest::Client, base_url: impl Into<String>, clock: PlatformClock) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_string();
        WechatApi { http, base_url, clock, tokens: Arc::default() }
    }

    /// Sends `msg` as a `kind` message of `app`.
    pub async fn send(&self, app: &WechatApp<'_>, kind: MessageKind, msg: &WechatMessage<'_>) -> SendResult {
        let slot = self.slot(app.app_id);
        let token = match self.token(&slot, app, None).await {
            Ok(token) => token,
            Err(failed) => return failed,
        };
        let body = request_body(kind, msg);
        let first = self.post_message(kind, &token, &body).await;
        let Answer::Err { errcode, errmsg } = &first else { return conclude(kind, first) };
        if !INVALID_TOKEN.contains(errcode) {
            return conclude(kind, first);
        }
        tracing::debug!(app_id = app.app_id, errcode = *errcode, %errmsg, "access token rejected; fetching another");
        let token = match self.token(&slot, app, Some(&token)).await {
            Ok(token) => token,
            Err(failed) => return failed,
        };
        match self.post_message(kind, &token, &body).await {
            Answer::Err { errcode, errmsg } if INVALID_TOKEN.contains(&errcode) => SendResult::Failed {
                retryable: false,
                detail: format!("a fresh access token was rejected too: errcode {errcode} {errmsg}"),
            },
            second => conclude(kind, second),
        }
    }

    /// The cache slot of `app_id`.
    fn slot(&self, app_id: &str) -> Arc<tokio::sync::Mutex<Option<Token>>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.entry(app_id.to_string()).or_default().clone()
    }

    /// A token to send with: the cached one while more than five minutes of it remain, else a
    /// new one. `rejected` is a token WeChat just refused: a different cached token (another
    /// caller already replaced it) is used, else a new one is fetched — by forced refresh if
    /// normal mode hands back the rejected token.
    async fn token(
        &self,
        slot: &tokio::sync::Mutex<Option<Token>>,
        app: &WechatApp<'_>,
        rejected: Option<&str>,
    ) -> Result<String, SendResult> {
        let mut cached = slot.lock().await;
        let now = self.clock.now_ms();
        if let Some(token) = cached.as_ref()
            && token.expires_at_ms - now >= REFRESH_MARGIN_MS
            && rejected != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        if rejected.is_some() {
            *cached = None;
        }
        let mut token = self.fetch_token(app, false).await?;
        if rejected == Some(token.value.as_str()) {
            token = self.fetch_token(app, true).await?;
        }
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// `POST /cgi-bin/stable_token`.
    async fn fetch_token(&self, app: &WechatApp<'_>, force_refresh: bool) -> Result<Token, SendResult> {
        let asked_at = self.clock.now_ms();
        let body = json!({
            "grant_type": "client_credential",
            "appid": app.app_id,
            "secret": app.secret,
            "force_refresh": force_refresh,
        });
        let url = format!("{}/cgi-bin/stable_token", self.base_url);
        let answer = match self.post_json(&url, None, &body).await {
            Ok(answer) => answer,
            Err((retryable, detail)) => {
                return Err(SendResult::Failed {
                    retryable,
                    detail: format!("stable_token for {}: {detail}", app.app_id),
                });
            }
        };
        let token = answer.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        if let (Some(token), Some(expires_in)) = (token, answer.get("expires_in").and_then(Value::as_i64)) {
            tracing::debug!(app_id = app.app_id, expires_in, force_refresh, "fetched a WeChat access token");
            return Ok(Token { value: token.to_string(), expires_at_ms: asked_at + expires_in * 1000 });
        }
        let (errcode, errmsg) = errcode_of(&answer);
        if errcode == 0 {
            let detail = format!("stable_token for {}: an answer with neither a token nor an errcode", app.app_id);
            return Err(SendResult::Failed { retryable: true, detail });
        }
        Err(SendResult::Failed {
            retryable: matches!(errcode, SYSTEM_BUSY | MINUTE_QUOTA),
            detail: format!("stable_token for {}: errcode {errcode} {errmsg}", app.app_id),
        })
    }

    /// Posts the message with `token`.
    async fn post_message(&self, kind: MessageKind, token: &str, body: &Value) -> Answer {
        let path = match kind {
            MessageKind::Template => "/cgi-bin/message/template/send",
            MessageKind::Subscribe => "/cgi-bin/message/subscribe/send",
        };
        let url = format!("{}{path}", self.base_url);
        let answer = match self.post_json(&url, Some(token), body).await {
            Ok(answer) => answer,
            Err((retryable, detail)) => return Answer::Failed { retryable, detail: format!("{path}: {detail}") },
        };
        match errcode_of(&answer) {
            (0, _) => Answer::Ok { msgid: answer.get("msgid").and_then(msgid_text) },
            (errcode, errmsg) => Answer::Err { errcode, errmsg },
        }
    }

    /// Posts `body` as JSON and reads the JSON answer; a failure is whether to retry and why,
    /// never naming the URL (it carries the access token).
    async fn post_json(&self, url: &str, token: Option<&str>, body: &Value) -> Result<Value, (bool, String)> {
        let mut request = self.http.post(url).json(body);
        if let Some(token) = token {
            request = request.query(&[("access_token", token)]);
        }
        let response = request.send().await.map_err(|e| (true, e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let retryable = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err((retryable, format!("HTTP {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| (true, e.without_url().to_string()))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(answer @ Value::Object(_)) => Ok(answer),
            _ => Err((true, format!("an answer that is not a JSON object ({} bytes)", bytes.len()))),
        }
    }
}

/// The request body of a `kind` message.
fn request_body(kind: MessageKind, msg: &WechatMessage<'_>) -> Value {
    let data: Map<String, Value> = msg.fields.iter().map(|(k, v)| (k.clone(), json!({ "value": v }))).collect();
    let mut body = Map::new();
    body.insert("touser".into(), msg.touser.into());
    body.insert("template_id".into(), msg.template_id.into());
    match kind {
        MessageKind::Template => {
            if !msg.link.is_empty() {
                body.insert("url".into(), msg.link.into());
            }
            if let Some(id) = msg.dedup_id {
                body.insert("client_msg_id".into(), id.into());
            }
        }
        MessageKind::Subscribe => {
            if !msg.link.is_empty() {
                body.insert("page".into(), msg.link.into());
            }
            body.insert("miniprogram_state".into(), "formal".into());
            if !msg.lang.is_empty() {
                body.insert("lang".into(), msg.lang.into());
            }
        }
    }
    body.insert("data".into(), Value::Object(data));
    Value::Object(body)
}

/// What a send's answer means for the caller.
fn conclude(kind: MessageKind, answer: Answer) -> SendResult {
    match answer {
        Answer::Ok { msgid } => SendResult::Sent { msgid },
        Answer::Failed { retryable, detail } => SendResult::Failed { retryable, detail },
        Answer::Err { errcode, errmsg } => {
            let refused = match kind {
                MessageKind::Template => [NOT_FOLLOWING, INVALID_OPENID].contains(&errcode),
                MessageKind::Subscribe => [SUBSCRIPTION_REFUSED, INVALID_OPENID].contains(&errcode),
            };
            if refused {
                SendResult::Refused { errcode, errmsg }
            } else {
                SendResult::Failed {
                    retryable: matches!(errcode, SYSTEM_BUSY | MINUTE_QUOTA),
                    detail: format!("errcode {errcode} {errmsg}"),
                }
            }
        }
    }
}

/// `errcode` (0 when absent, as on a token answer) and `errmsg`.
fn errcode_of(answer: &Value) -> (i64, String) {
    let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or_default().to_string();
    (errcode, errmsg)
}

/// A msgid, which WeChat writes as a number.
fn msgid_text(msgid: &Value) -> Option<String> {
    match msgid {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}
