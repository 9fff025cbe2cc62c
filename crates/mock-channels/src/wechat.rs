//! A fake of WeChat's `cgi-bin` message API: stable access tokens, official-account template
//! messages and mini-program subscribe messages, answering as WeChat's documentation says.
//!
//! - `POST /cgi-bin/stable_token` (getStableAccessToken, developers.weixin.qq.com
//!   `doc/service/api/base/api_getstableaccesstoken` and the mini-program's
//!   `mp-access-token/getStableAccessToken`). In normal mode a token is handed out again while it
//!   is valid, with `expires_in` the seconds it has left ("如果仍然有效，会返回上次的 token，并给出所剩
//!   有效时间"); within its last five minutes a new one is issued and the old one keeps working
//!   until it expires ("平台会提前 5 分钟更新 access_token … 新旧 access_token 都可用"). Forced refresh
//!   issues a new token and retires the one before; at most 20 a day, and one within 30 seconds of
//!   the last does not refresh ("强制刷新模式每天限用 20 次且需间隔 30 秒 … 否则不会刷新"). The docs'
//!   leak procedure — two forced refreshes 30 seconds apart make the leaked token fail at once —
//!   implies that a single forced refresh leaves the replaced token working a while: here it is
//!   given the same five minutes as the normal-mode handover, and the next forced refresh ends it.
//!   Errors are the endpoint's documented codes: 40002 invalid grant_type, 40013 invalid appid,
//!   40125 invalid appsecret, 41002 appid missing, 41004 appsecret missing, 43002 require POST
//!   method, 45009 for the forced-refresh quota.
//! - `POST /cgi-bin/message/template/send` (sendTemplateMessage, `doc/service/api/notify/template/
//!   api_sendtemplatemessage`): answers `{"errcode":0,"errmsg":"ok","msgid":N}`; 43004 "require
//!   subscribe" for a payer who does not follow the account, 40003 invalid openid, 40037 invalid
//!   template_id. `client_msg_id` is its documented de-duplication key: one message per openid and
//!   id within ten minutes (the docs do not say what a repeat is answered; here: the first msgid).
//! - `POST /cgi-bin/message/subscribe/send` (mini-program sendMessage, `mp-message-management/
//!   subscribe-message/sendMessage`): answers `{"errcode":0,"errmsg":"ok"}` (the documented answer
//!   names no msgid); its documented codes 40003, 40037, 43101 (the user refused, or cancelled the
//!   subscription), 47003 (a `data` value missing or breaking its keyword's rule, e.g. `thing` at
//!   most 20 characters); a one-time subscription allows one message.
//! - Every send checks the access token as the global return codes say: 41001 access_token
//!   missing, 40001 for a token that is not (or no longer) valid, 42001 access_token expired; a
//!   token of the wrong kind of account gets 48001 api unauthorized; -1 system error is WeChat's
//!   "busy, try again later" (the fake answers it only when told to, see [`WechatMock::fail_sends`]).
//!   Answers are HTTP 200 with JSON, errors as `{"errcode","errmsg"}` with a `rid` in `errmsg`.
//!
//! Tests drive the fake through [`WechatMock`]'s methods; local runs through `/mock/wechat/…`
//! (see [`router`]). Its time is a `now_ms` function, so a test can run it on the platform's test
//! clock.
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// The fake's clock: milliseconds since the Unix epoch.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A token's lifetime unless a test sets another: 7200 seconds, as the docs give.
pub const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 7200;
/// The normal-mode handover: a token with this little left is replaced, and a replaced token
/// keeps working this long at most.
const HANDOVER_MS: i64 = 5 * 60_000;
/// Forced refreshes closer together than this do not refresh.
const FORCE_INTERVAL_MS: i64 = 30_000;
/// Forced refreshes allowed per day (Beijing time).
const FORCE_PER_DAY: u32 = 20;
/// How long a template message's `client_msg_id` holds off a repeat.
const DEDUP_MS: i64 = 10 * 60_000;

/// Which kind of account an app id is: it decides which send endpoint its tokens may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// A service (official) account: template messages.
    OfficialAccount,
    /// A mini program: subscribe messages.
    MiniProgram,
}

/// Which endpoint a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Template,
    Subscribe,
}

/// How a payer (an openid of an app) takes messages. Payers the fake was told nothing of are
/// `Reachable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayerState {
    /// Follows the account and holds a long-term subscription to every template.
    Reachable,
    /// Does not follow the official account: template sends answer 43004.
    NotFollowing,
    /// Refused (or cancelled) the mini program's subscription: subscribe sends answer 43101.
    Refusing,
    /// Accepted this many one-time subscriptions: each subscribe send uses one, then 43101.
    OneTime(u32),
    /// Not an openid of this app: sends answer 40003.
    Unknown,
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub appid: String,
    pub endpoint: Endpoint,
    pub touser: String,
    pub template_id: String,
    /// Each `data` keyword's value.
    pub fields: BTreeMap<String, String>,
    /// The template message's `url`.
    pub url: Option<String>,
    /// The subscribe message's `page`.
    pub page: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
    pub client_msg_id: Option<String>,
    /// The request body as sent.
    pub body: Value,
    pub msgid: u64,
}

/// What an app id has seen of the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// `stable_token` requests naming the app, answered or not.
    pub fetches: u32,
    /// Forced refreshes that issued a new token.
    pub forced_refreshes: u32,
}

/// The fake's state and controls; clones share it.
#[derive(Clone)]
pub struct WechatMock {
    book: Arc<Mutex<Book>>,
    now_ms: NowMs,
}

#[derive(Default)]
struct Book {
    /// Token lifetime in seconds; `None` is [`DEFAULT_TOKEN_LIFETIME_SECS`].
    lifetime_secs: Option<i64>,
    apps: HashMap<String, App>,
    /// Every token still honoured (until its `expires_ms`), with its app.
    tokens: HashMap<String, Token>,
    serial: u64,
    messages: Vec<ReceivedMessage>,
    /// Answers the next sends get instead of being handled.
    scripted: VecDeque<(i64, String)>,
    send_requests: u32,
    /// (appid, openid, client_msg_id) → (when, msgid).
    dedup: HashMap<(String, String, String), (i64, u64)>,
    /// When `dedup` was last cleared of ids past their window.
    dedup_pruned_ms: i64,
}

struct App {
    secret: String,
    kind: AppKind,
    /// Template id → its keywords.
    templates: HashMap<String, Vec<String>>,
    payers: HashMap<String, PayerState>,
    current: Option<String>,
    last_forced_ms: Option<i64>,
    forced_day: i64,
    forced_today: u32,
    stats: TokenStats,
}

struct Token {
    appid: String,
    expires_ms: i64,
}

impl std::fmt::Debug for WechatMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatMock").finish_non_exhaustive()
    }
}

impl WechatMock {
    /// An empty fake on the clock `now_ms`.
    pub fn new(now_ms: NowMs) -> Self {
        WechatMock { book: Arc::default(), now_ms }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> i64 {
        (self.now_ms)()
    }

    /// Registers (or replaces the secret and kind of) an app.
    pub fn register_app(&self, appid: &str, secret: &str, kind: AppKind) {
        let mut book = self.book();
        let app = book.apps.entry(appid.to_string()).or_insert_with(|| App {
            secret: String::new(),
            kind,
            templates: HashMap::new(),
            payers: HashMap::new(),
            current: None,
            last_forced_ms: None,
            forced_day: 0,
            forced_today: 0,
            stats: TokenStats::default(),
        });
        app.secret = secret.to_string();
        app.kind = kind;
    }

    /// Adds a template (an official account's template, or a mini program's subscribe template)
    /// with its keywords, e.g. `["thing1", "amount2"]`: a send must give each a value.
    pub fn add_template(&self, appid: &str, template_id: &str, keywords: &[&str]) {
        if let Some(app) = self.book().apps.get_mut(appid) {
            app.templates.insert(template_id.to_string(), keywords.iter().map(|k| k.to_string()).collect());
        }
    }

    /// Sets how a payer takes messages.
    pub fn set_payer(&self, appid: &str, openid: &str, state: PayerState) {
        if let Some(app) = self.book().apps.get_mut(appid) {
            app.payers.insert(openid.to_string(), state);
        }
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: i64) {
        self.book().lifetime_secs = Some(secs);
    }

    /// Makes every token issued so far invalid at once (sends with one answer 40001); the next
    /// `stable_token` call issues a new one.
    pub fn invalidate_tokens(&self) {
        let mut book = self.book();
        book.tokens.clear();
        for app in book.apps.values_mut() {
            app.current = None;
        }
    }

    /// The next `times` send requests are answered `errcode` (e.g. -1 system busy, 40001) before
    /// anything else is looked at.
    pub fn fail_sends(&self, errcode: i64, errmsg: &str, times: u32) {
        let mut book = self.book();
        for _ in 0..times {
            book.scripted.push_back((errcode, errmsg.to_string()));
        }
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.book().messages.clone()
    }

    /// What `appid` has seen of the token endpoint.
    pub fn token_stats(&self, appid: &str) -> TokenStats {
        self.book().apps.get(appid).map(|a| a.stats).unwrap_or_default()
    }

    /// Requests to either send endpoint, answered or not.
    pub fn send_requests(&self) -> u32 {
        self.book().send_requests
    }

    /// `POST /cgi-bin/stable_token`.
    fn stable_token(&self, body: &[u8]) -> Value {
        let now = self.now();
        let mut book = self.book();
        let Some(req) = parse_object(body) else { return error(&mut book, now, 47001, "data format error") };
        let field = |name: &str| req.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let (grant_type, appid, secret) = (field("grant_type"), field("appid"), field("secret"));
        let force = req.get("force_refresh").and_then(Value::as_bool).unwrap_or(false);
        if let Some(app) = book.apps.get_mut(&appid) {
            app.stats.fetches += 1;
        }
        if grant_type != "client_credential" {
            return error(&mut book, now, 40002, "invalid grant_type");
        }
        if appid.is_empty() {
            return error(&mut book, now, 41002, "appid missing");
        }
        if secret.is_empty() {
            return error(&mut book, now, 41004, "appsecret missing");
        }
        let Some(app) = book.apps.get(&appid) else { return error(&mut book, now, 40013, "invalid appid") };
        if app.secret != secret {
            return error(&mut book, now, 40125, "invalid appsecret");
        }
        // A forced refresh within 30 seconds of the last one does not refresh: it is answered as
        // in normal mode.
        let forced = force && app.last_forced_ms.is_none_or(|last| now - last >= FORCE_INTERVAL_MS);
        if forced {
            let day = (now + 8 * 3_600_000).div_euclid(86_400_000);
            let app = book.apps.get_mut(&appid).expect("looked up above");
            if app.forced_day != day {
                (app.forced_day, app.forced_today) = (day, 0);
            }
            if app.forced_today >= FORCE_PER_DAY {
                return error(&mut book, now, 45009, "reach max api daily quota limit");
            }
            app.forced_today += 1;
            app.last_forced_ms = Some(now);
            app.stats.forced_refreshes += 1;
            let current = app.current.take();
            // Every older token ends now; the one just replaced gets the handover.
            book.tokens.retain(|token, t| t.appid != appid || Some(token) == current.as_ref());
            if let Some(t) = current.and_then(|c| book.tokens.get_mut(&c)) {
                t.expires_ms = t.expires_ms.min(now + HANDOVER_MS);
            }
        } else if let Some(current) = &app.current
            && let Some(t) = book.tokens.get(current)
            && t.expires_ms - now > HANDOVER_MS
        {
            return json!({ "access_token": current, "expires_in": (t.expires_ms - now) / 1000 });
        }
        let lifetime = book.lifetime_secs.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS);
        book.serial += 1;
        let token = format!("{}_{appid}_{:016x}", book.serial, now.wrapping_mul(31).wrapping_add(book.serial as i64));
        book.tokens.insert(token.clone(), Token { appid: appid.clone(), expires_ms: now + lifetime * 1000 });
        book.apps.get_mut(&appid).expect("looked up above").current = Some(token.clone());
        json!({ "access_token": token, "expires_in": lifetime })
    }

    /// `POST /cgi-bin/message/template/send` and `…/subscribe/send`.
    fn send(&self, endpoint: Endpoint, access_token: Option<&str>, body: &[u8]) -> Value {
        let now = self.now();
        let mut book = self.book();
        book.send_requests += 1;
        if let Some((errcode, errmsg)) = book.scripted.pop_front() {
            return error(&mut book, now, errcode, &errmsg);
        }
        let token = access_token.unwrap_or_default();
        if token.is_empty() {
            return error(&mut book, now, 41001, "access_token missing");
        }
        let appid = match book.tokens.get(token) {
            None => {
                return error(&mut book, now, 40001, "invalid credential, access_token is invalid or not latest");
            }
            Some(t) if t.expires_ms <= now => return error(&mut book, now, 42001, "access_token expired"),
            Some(t) => t.appid.clone(),
        };
        let Some(app) = book.apps.get(&appid) else { return error(&mut book, now, 40001, "invalid credential") };
        let allowed = match endpoint {
            Endpoint::Template => AppKind::OfficialAccount,
            Endpoint::Subscribe => AppKind::MiniProgram,
        };
        if app.kind != allowed {
            return error(&mut book, now, 48001, "api unauthorized");
        }
        let Some(req) = parse_object(body) else { return error(&mut book, now, 47001, "data format error") };
        let text = |name: &str| req.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let touser = text("touser").unwrap_or_default();
        let payer = app.payers.get(&touser).copied().unwrap_or(PayerState::Reachable);
        if !is_openid(&touser) || payer == PayerState::Unknown {
            return error(&mut book, now, 40003, "invalid openid");
        }
        let template_id = text("template_id").unwrap_or_default();
        let Some(keywords) = app.templates.get(&template_id) else {
            return error(&mut book, now, 40037, "invalid template_id");
        };
        let fields = match read_data(req.get("data"), keywords, endpoint) {
            Ok(fields) => fields,
            Err(problem) => return error(&mut book, now, 47003, &format!("argument invalid! {problem}")),
        };
        let client_msg_id = match endpoint {
            Endpoint::Template => text("client_msg_id"),
            Endpoint::Subscribe => None,
        };
        match (endpoint, payer) {
            (Endpoint::Template, PayerState::NotFollowing) => {
                return error(&mut book, now, 43004, "require subscribe");
            }
            (Endpoint::Subscribe, PayerState::Refusing | PayerState::OneTime(0)) => {
                return error(&mut book, now, 43101, "user refuse to accept the msg");
            }
            _ => {}
        }
        if let Some(id) = &client_msg_id {
            let key = (appid.clone(), touser.clone(), id.clone());
            if now - book.dedup_pruned_ms >= DEDUP_MS {
                book.dedup.retain(|_, (at, _)| now - *at < DEDUP_MS);
                book.dedup_pruned_ms = now;
            }
            if let Some((at, msgid)) = book.dedup.get(&key)
                && now - *at < DEDUP_MS
            {
                return json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid });
            }
        }
        if let (Endpoint::Subscribe, PayerState::OneTime(left)) = (endpoint, payer) {
            let app = book.apps.get_mut(&appid).expect("looked up above");
            app.payers.insert(touser.clone(), PayerState::OneTime(left - 1));
        }
        book.serial += 1;
        let msgid = 2_000_000_000 + book.serial;
        if let Some(id) = &client_msg_id {
            book.dedup.insert((appid.clone(), touser.clone(), id.clone()), (now, msgid));
        }
        book.messages.push(ReceivedMessage {
            appid,
            endpoint,
            touser,
            template_id,
            fields,
            url: text("url"),
            page: text("page"),
            miniprogram_state: text("miniprogram_state"),
            lang: text("lang"),
            client_msg_id,
            body: Value::Object(req),
            msgid,
        });
        match endpoint {
            Endpoint::Template => json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid }),
            Endpoint::Subscribe => json!({ "errcode": 0, "errmsg": "ok" }),
        }
    }
}

/// An error answer, with a request id in `errmsg` as WeChat writes it.
fn error(book: &mut Book, now: i64, errcode: i64, errmsg: &str) -> Value {
    book.serial += 1;
    json!({ "errcode": errcode, "errmsg": format!("{errmsg} rid: {:08x}-{:08x}", now / 1000, book.serial) })
}

fn parse_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// An openid as WeChat issues them: letters, digits, `-` and `_`.
fn is_openid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `data`: `{keyword: {"value": …}}` with a value for each of the template's keywords. A
/// subscribe message's values also keep to their keyword type's documented rule.
fn read_data(
    data: Option<&Value>,
    keywords: &[String],
    endpoint: Endpoint,
) -> Result<BTreeMap<String, String>, String> {
    let Some(Value::Object(data)) = data else { return Err("data invalid".into()) };
    let mut fields = BTreeMap::new();
    for (key, item) in data {
        let value = match item.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(format!("data.{key}.value invalid")),
        };
        fields.insert(key.clone(), value);
    }
    for keyword in keywords {
        match fields.get(keyword) {
            None => return Err(format!("data.{keyword}.value empty")),
            Some(value) if endpoint == Endpoint::Subscribe && !subscribe_value_ok(keyword, value) => {
                return Err(format!("data.{keyword}.value invalid"));
            }
            Some(_) => {}
        }
    }
    Ok(fields)
}

/// The subscribe message's value rules ("订阅消息参数值内容限制说明") for the keyword types whose
/// rule is plain: `thing` at most 20 characters, `number` at most 32 digits (a decimal point
/// allowed), `letter` at most 32 letters, `character_string` at most 32 digits, letters or
/// symbols, `phrase` at most 5 Chinese characters. Other types need a value only.
fn subscribe_value_ok(keyword: &str, value: &str) -> bool {
    let kind = keyword.trim_end_matches(|c: char| c.is_ascii_digit());
    let chars = value.chars().count();
    let cjk = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
    match kind {
        "thing" => (1..=20).contains(&chars),
        "number" => (1..=32).contains(&chars) && value.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "letter" => (1..=32).contains(&chars) && value.chars().all(|c| c.is_ascii_alphabetic()),
        "character_string" => (1..=32).contains(&chars) && value.chars().all(|c| c.is_ascii_graphic()),
        "phrase" => (1..=5).contains(&chars) && value.chars().all(cjk),
        _ => chars > 0,
    }
}

/// The fake's routes: WeChat's endpoints and its control endpoints for local runs —
/// `POST /mock/wechat/apps` `{"appid","secret","kind":"official_account"|"mini_program",
/// "templates":{"id":["keyword",…]}}`, `POST /mock/wechat/payers` `{"appid","openid","state":
/// "reachable"|"not_following"|"refusing"|"unknown"}` or `"one_time":n`, `POST
/// /mock/wechat/token-lifetime` `{"seconds"}`, `POST /mock/wechat/invalidate-tokens`, `POST
/// /mock/wechat/fail-sends` `{"errcode","errmsg","times"}`, `GET /mock/wechat/messages`,
/// `GET /mock/wechat/stats?appid=…`.
pub fn router(mock: WechatMock) -> Router {
    Router::new()
        .route("/cgi-bin/stable_token", post(stable_token).get(require_post))
        .route("/cgi-bin/message/template/send", post(template_send).get(require_post))
        .route("/cgi-bin/message/subscribe/send", post(subscribe_send).get(require_post))
        .route("/mock/wechat/apps", post(control_app))
        .route("/mock/wechat/payers", post(control_payer))
        .route("/mock/wechat/token-lifetime", post(control_lifetime))
        .route("/mock/wechat/invalidate-tokens", post(control_invalidate))
        .route("/mock/wechat/fail-sends", post(control_fail_sends))
        .route("/mock/wechat/messages", get(control_messages))
        .route("/mock/wechat/stats", get(control_stats))
        .with_state(mock)
}

/// Serves the fake on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, mock: WechatMock) -> std::io::Result<()> {
    axum::serve(listener, router(mock)).await
}

type Params = Query<HashMap<String, String>>;

async fn stable_token(State(mock): State<WechatMock>, body: Bytes) -> axum::Json<Value> {
    axum::Json(mock.stable_token(&body))
}

async fn template_send(State(mock): State<WechatMock>, Query(q): Params, body: Bytes) -> axum::Json<Value> {
    axum::Json(mock.send(Endpoint::Template, q.get("access_token").map(String::as_str), &body))
}

async fn subscribe_send(State(mock): State<WechatMock>, Query(q): Params, body: Bytes) -> axum::Json<Value> {
    axum::Json(mock.send(Endpoint::Subscribe, q.get("access_token").map(String::as_str), &body))
}

async fn require_post(State(mock): State<WechatMock>) -> axum::Json<Value> {
    let now = mock.now();
    axum::Json(error(&mut mock.book(), now, 43002, "require POST method"))
}

fn bad_request(problem: &str) -> Response {
    (axum::http::StatusCode::BAD_REQUEST, problem.to_string()).into_response()
}

async fn control_app(State(mock): State<WechatMock>, body: Bytes) -> Response {
    let Some(req) = parse_object(&body) else { return bad_request("a JSON object is expected") };
    let text = |name: &str| req.get(name).and_then(Value::as_str).unwrap_or_default();
    let kind = match text("kind") {
        "official_account" => AppKind::OfficialAccount,
        "mini_program" => AppKind::MiniProgram,
        _ => return bad_request("kind is official_account or mini_program"),
    };
    mock.register_app(text("appid"), text("secret"), kind);
    for (id, keywords) in req.get("templates").and_then(Value::as_object).into_iter().flatten() {
        let keywords: Vec<&str> = keywords.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        mock.add_template(text("appid"), id, &keywords);
    }
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn control_payer(State(mock): State<WechatMock>, body: Bytes) -> Response {
    let Some(req) = parse_object(&body) else { return bad_request("a JSON object is expected") };
    let text = |name: &str| req.get(name).and_then(Value::as_str).unwrap_or_default();
    let state = match (text("state"), req.get("one_time").and_then(Value::as_u64)) {
        (_, Some(n)) => PayerState::OneTime(u32::try_from(n).unwrap_or(u32::MAX)),
        ("reachable", _) => PayerState::Reachable,
        ("not_following", _) => PayerState::NotFollowing,
        ("refusing", _) => PayerState::Refusing,
        ("unknown", _) => PayerState::Unknown,
        _ => return bad_request("state is reachable, not_following, refusing or unknown, or one_time is a count"),
    };
    mock.set_payer(text("appid"), text("openid"), state);
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn control_lifetime(State(mock): State<WechatMock>, body: Bytes) -> Response {
    match parse_object(&body).and_then(|req| req.get("seconds").and_then(Value::as_i64)) {
        Some(secs) => {
            mock.set_token_lifetime(secs);
            axum::http::StatusCode::NO_CONTENT.into_response()
        }
        None => bad_request("seconds is expected"),
    }
}

async fn control_invalidate(State(mock): State<WechatMock>) -> axum::http::StatusCode {
    mock.invalidate_tokens();
    axum::http::StatusCode::NO_CONTENT
}

async fn control_fail_sends(State(mock): State<WechatMock>, body: Bytes) -> Response {
    let Some(req) = parse_object(&body) else { return bad_request("a JSON object is expected") };
    let Some(errcode) = req.get("errcode").and_then(Value::as_i64) else { return bad_request("errcode is expected") };
    let errmsg = req.get("errmsg").and_then(Value::as_str).unwrap_or("system error");
    let times = req.get("times").and_then(Value::as_u64).unwrap_or(1);
    mock.fail_sends(errcode, errmsg, u32::try_from(times).unwrap_or(u32::MAX));
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn control_messages(State(mock): State<WechatMock>) -> axum::Json<Value> {
    let messages: Vec<Value> = mock
        .messages()
        .into_iter()
        .map(|m| {
            json!({
                "appid": m.appid,
                "endpoint": match m.endpoint { Endpoint::Template => "template", Endpoint::Subscribe => "subscribe" },
                "touser": m.touser,
                "template_id": m.template_id,
                "fields": m.fields,
                "url": m.url,
                "page": m.page,
                "lang": m.lang,
                "msgid": m.msgid,
            })
        })
        .collect();
    axum::Json(json!({ "messages": messages }))
}

async fn control_stats(State(mock): State<WechatMock>, Query(q): Params) -> axum::Json<Value> {
    let stats = mock.token_stats(q.get("appid").map(String::as_str).unwrap_or_default());
    axum::Json(json!({
        "token_fetches": stats.fetches,
        "forced_refreshes": stats.forced_refreshes,
        "send_requests": mock.send_requests(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    const OA: &str = "wx0a0a0a0a0a0a0a0a";
    const MP: &str = "wx0b0b0b0b0b0b0b0b";
    const PAYER: &str = "oPayer_0123456789abcdefghij";

    /// A fake with an official account (template `T1`: `keyword1`, `keyword2`) and a mini
    /// program (template `S1`: `thing1`, `amount2`), on a clock the test moves.
    fn fake() -> (WechatMock, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
        let now = clock.clone();
        let mock = WechatMock::new(Arc::new(move || now.load(Ordering::SeqCst)));
        mock.register_app(OA, "oa-secret", AppKind::OfficialAccount);
        mock.add_template(OA, "T1", &["keyword1", "keyword2"]);
        mock.register_app(MP, "mp-secret", AppKind::MiniProgram);
        mock.add_template(MP, "S1", &["thing1", "amount2"]);
        (mock, clock)
    }

    fn advance(clock: &AtomicI64, secs: i64) {
        clock.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    fn token_request(mock: &WechatMock, appid: &str, secret: &str, force: bool) -> Value {
        let body = json!({"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force});
        mock.stable_token(body.to_string().as_bytes())
    }

    fn token(mock: &WechatMock, appid: &str, force: bool) -> (String, i64) {
        let secret = if appid == OA { "oa-secret" } else { "mp-secret" };
        let answer = token_request(mock, appid, secret, force);
        let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("no token: {answer}")).to_string();
        (token, answer["expires_in"].as_i64().unwrap())
    }

    fn template(mock: &WechatMock, token: &str, body: Value) -> Value {
        mock.send(Endpoint::Template, Some(token), body.to_string().as_bytes())
    }

    fn subscribe(mock: &WechatMock, token: &str, body: Value) -> Value {
        mock.send(Endpoint::Subscribe, Some(token), body.to_string().as_bytes())
    }

    fn template_body(touser: &str) -> Value {
        json!({"touser": touser, "template_id": "T1", "url": "https://example.com/c/1",
               "data": {"keyword1": {"value": "¥12.00"}, "keyword2": {"value": "2025年1月1日"}}})
    }

    fn subscribe_body(touser: &str) -> Value {
        json!({"touser": touser, "template_id": "S1", "page": "pages/bill?id=1", "miniprogram_state": "formal",
               "lang": "zh_CN", "data": {"thing1": {"value": "月度会员续费"}, "amount2": {"value": "¥12.00"}}})
    }

    fn errcode(answer: &Value) -> i64 {
        answer["errcode"].as_i64().unwrap_or_else(|| panic!("no errcode: {answer}"))
    }

    #[test]
    fn normal_mode_hands_out_the_same_token_until_its_last_five_minutes() {
        let (mock, clock) = fake();
        mock.set_token_lifetime(1800);
        let (first, expires_in) = token(&mock, OA, false);
        assert_eq!(expires_in, 1800);
        advance(&clock, 600);
        assert_eq!(token(&mock, OA, false), (first.clone(), 1200), "the same token with the seconds it has left");
        advance(&clock, 1000);
        // 200 seconds left: a new token, and the old one still works until it expires.
        let (second, expires_in) = token(&mock, OA, false);
        assert_ne!(second, first);
        assert_eq!(expires_in, 1800);
        assert_eq!(errcode(&template(&mock, &first, template_body(PAYER))), 0);
        advance(&clock, 200);
        assert_eq!(errcode(&template(&mock, &first, template_body(PAYER))), 42001);
        assert_eq!(errcode(&template(&mock, &second, template_body(PAYER))), 0);
        assert_eq!(mock.token_stats(OA), TokenStats { fetches: 3, forced_refreshes: 0 });
    }

    #[test]
    fn forced_refresh_replaces_the_token_at_most_every_30_seconds_and_20_times_a_day() {
        let (mock, clock) = fake();
        let (first, _) = token(&mock, OA, false);
        let (second, expires_in) = token(&mock, OA, true);
        assert_ne!(second, first);
        assert_eq!(expires_in, DEFAULT_TOKEN_LIFETIME_SECS);
        // The replaced token keeps working through the handover.
        assert_eq!(errcode(&template(&mock, &first, template_body(PAYER))), 0);
        advance(&clock, 10);
        assert_eq!(token(&mock, OA, true).0, second, "within 30 seconds of the last: no refresh");
        advance(&clock, 20);
        let (third, _) = token(&mock, OA, true);
        assert_ne!(third, second);
        // The second forced refresh ends the first token at once; the second is in its handover.
        assert_eq!(errcode(&template(&mock, &first, template_body(PAYER))), 40001);
        assert_eq!(errcode(&template(&mock, &second, template_body(PAYER))), 0);
        advance(&clock, 300);
        assert_eq!(errcode(&template(&mock, &second, template_body(PAYER))), 42001, "the handover is five minutes");
        let mut last = third;
        for _ in 2..20 {
            advance(&clock, 30);
            last = token(&mock, OA, true).0;
        }
        advance(&clock, 30);
        assert_eq!(errcode(&token_request(&mock, OA, "oa-secret", true)), 45009);
        assert_eq!(token(&mock, OA, false).0, last, "normal mode goes on");
        assert_eq!(mock.token_stats(OA).forced_refreshes, 20);
    }

    #[test]
    fn stable_token_answers_its_documented_errors() {
        let (mock, _) = fake();
        assert_eq!(errcode(&token_request(&mock, OA, "wrong", false)), 40125);
        assert_eq!(errcode(&token_request(&mock, "wx_unknown", "oa-secret", false)), 40013);
        assert_eq!(errcode(&token_request(&mock, "", "oa-secret", false)), 41002);
        assert_eq!(errcode(&token_request(&mock, OA, "", false)), 41004);
        let body = json!({"grant_type": "authorization_code", "appid": OA, "secret": "oa-secret"});
        assert_eq!(errcode(&mock.stable_token(body.to_string().as_bytes())), 40002);
        assert_eq!(errcode(&mock.stable_token(b"appid=x")), 47001);
        let answer = token_request(&mock, OA, "wrong", false);
        assert!(answer["errmsg"].as_str().unwrap().starts_with("invalid appsecret rid: "), "{answer}");
        assert_eq!(mock.token_stats(OA).fetches, 4, "every request naming the app is counted");
    }

    #[test]
    fn sends_check_the_access_token() {
        let (mock, _) = fake();
        let body = template_body(PAYER).to_string();
        assert_eq!(errcode(&mock.send(Endpoint::Template, None, body.as_bytes())), 41001);
        assert_eq!(errcode(&mock.send(Endpoint::Template, Some("made-up"), body.as_bytes())), 40001);
        let (mp_token, _) = token(&mock, MP, false);
        assert_eq!(errcode(&template(&mock, &mp_token, template_body(PAYER))), 48001);
        let (oa_token, _) = token(&mock, OA, false);
        assert_eq!(errcode(&subscribe(&mock, &oa_token, subscribe_body(PAYER))), 48001);
        mock.invalidate_tokens();
        assert_eq!(errcode(&template(&mock, &oa_token, template_body(PAYER))), 40001);
        assert_ne!(token(&mock, OA, false).0, oa_token, "a new token after the invalidation");
        assert!(mock.messages().is_empty());
    }

    #[test]
    fn template_send_delivers_to_followers_once_per_client_msg_id() {
        let (mock, clock) = fake();
        let (t, _) = token(&mock, OA, false);
        let answer = template(&mock, &t, template_body(PAYER));
        assert_eq!((errcode(&answer), answer["errmsg"].as_str()), (0, Some("ok")));
        let msgid = answer["msgid"].as_u64().expect("a template send answers its msgid");
        let received = mock.messages();
        assert_eq!(received.len(), 1);
        assert_eq!((received[0].touser.as_str(), received[0].template_id.as_str()), (PAYER, "T1"));
        assert_eq!(received[0].fields["keyword1"], "¥12.00");
        assert_eq!(received[0].url.as_deref(), Some("https://example.com/c/1"));
        assert_eq!(received[0].msgid, msgid);

        let mut deduped = template_body(PAYER);
        deduped["client_msg_id"] = json!("notice-7");
        let first = template(&mock, &t, deduped.clone());
        assert_eq!(template(&mock, &t, deduped.clone())["msgid"], first["msgid"]);
        assert_eq!(mock.messages().len(), 2, "a repeated client_msg_id is not delivered again");
        advance(&clock, 600);
        assert_ne!(template(&mock, &t, deduped)["msgid"], first["msgid"], "after ten minutes it is a new message");
        assert_eq!(mock.messages().len(), 3);
    }

    #[test]
    fn template_send_refuses_non_followers_and_bad_requests() {
        let (mock, _) = fake();
        let (t, _) = token(&mock, OA, false);
        mock.set_payer(OA, "oGone", PayerState::NotFollowing);
        mock.set_payer(OA, "oStranger", PayerState::Unknown);
        assert_eq!(errcode(&template(&mock, &t, template_body("oGone"))), 43004);
        assert_eq!(errcode(&template(&mock, &t, template_body("oStranger"))), 40003);
        assert_eq!(errcode(&template(&mock, &t, template_body("not an openid"))), 40003);
        let mut other = template_body(PAYER);
        other["template_id"] = json!("T9");
        assert_eq!(errcode(&template(&mock, &t, other)), 40037);
        let mut missing = template_body(PAYER);
        missing["data"].as_object_mut().unwrap().remove("keyword2");
        let answer = template(&mock, &t, missing);
        assert_eq!(errcode(&answer), 47003);
        assert!(answer["errmsg"].as_str().unwrap().contains("data.keyword2"), "{answer}");
        let mut flat = template_body(PAYER);
        flat["data"] = json!({"keyword1": "¥12.00", "keyword2": "today"});
        assert_eq!(errcode(&template(&mock, &t, flat)), 47003, "each keyword is an object with a value");
        assert_eq!(errcode(&mock.send(Endpoint::Template, Some(&t), b"not json")), 47001);
        assert!(mock.messages().is_empty());
    }

    #[test]
    fn subscribe_send_needs_a_subscription_and_keeps_the_value_rules() {
        let (mock, _) = fake();
        let (t, _) = token(&mock, MP, false);
        let answer = subscribe(&mock, &t, subscribe_body(PAYER));
        assert_eq!(answer, json!({"errcode": 0, "errmsg": "ok"}), "the documented answer has no msgid");
        let received = mock.messages();
        assert_eq!(received[0].page.as_deref(), Some("pages/bill?id=1"));
        assert_eq!(
            (received[0].lang.as_deref(), received[0].miniprogram_state.as_deref()),
            (Some("zh_CN"), Some("formal"))
        );

        mock.set_payer(MP, "oNo", PayerState::Refusing);
        assert_eq!(errcode(&subscribe(&mock, &t, subscribe_body("oNo"))), 43101);
        mock.set_payer(MP, "oOnce", PayerState::OneTime(1));
        assert_eq!(errcode(&subscribe(&mock, &t, subscribe_body("oOnce"))), 0);
        assert_eq!(
            errcode(&subscribe(&mock, &t, subscribe_body("oOnce"))),
            43101,
            "a one-time subscription is used up"
        );

        let mut long = subscribe_body(PAYER);
        long["data"]["thing1"]["value"] = json!("一二三四五六七八九十一二三四五六七八九十一");
        let answer = subscribe(&mock, &t, long);
        assert_eq!(errcode(&answer), 47003, "thing is at most 20 characters");
        assert!(answer["errmsg"].as_str().unwrap().contains("data.thing1.value"), "{answer}");
        assert!(subscribe_value_ok("phrase3", "已扣款"));
        assert!(!subscribe_value_ok("phrase3", "paid"));
        assert!(subscribe_value_ok("number4", "12.50"));
        assert!(!subscribe_value_ok("character_string5", "单号12"));
        assert_eq!(mock.messages().len(), 2);
    }

    #[test]
    fn scripted_answers_come_before_everything_else() {
        let (mock, _) = fake();
        let (t, _) = token(&mock, OA, false);
        mock.fail_sends(-1, "system error", 2);
        assert_eq!(errcode(&template(&mock, &t, template_body(PAYER))), -1);
        assert_eq!(errcode(&template(&mock, "made-up", template_body(PAYER))), -1);
        assert_eq!(errcode(&template(&mock, &t, template_body(PAYER))), 0);
        assert_eq!(mock.send_requests(), 3);
    }

    #[tokio::test]
    async fn the_router_serves_the_endpoints_and_the_controls() {
        use tower::ServiceExt;
        let (mock, _) = fake();
        let app = router(mock.clone());
        let call = |method: &str, uri: &str, body: Value| {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };
        let (_, answer) = call("GET", "/cgi-bin/stable_token", Value::Null).await;
        assert_eq!(errcode(&answer), 43002);
        let control =
            json!({"appid": "wx_local", "secret": "s", "kind": "official_account", "templates": {"T": ["k1"]}});
        assert_eq!(call("POST", "/mock/wechat/apps", control).await.0, axum::http::StatusCode::NO_CONTENT);
        let (_, answer) = call(
            "POST",
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": "wx_local", "secret": "s"}),
        )
        .await;
        let token = answer["access_token"].as_str().unwrap().to_string();
        let body = json!({"touser": PAYER, "template_id": "T", "data": {"k1": {"value": "v"}}});
        let (_, answer) = call("POST", &format!("/cgi-bin/message/template/send?access_token={token}"), body).await;
        assert_eq!(errcode(&answer), 0);
        let (_, listed) = call("GET", "/mock/wechat/messages", Value::Null).await;
        assert_eq!(listed["messages"][0]["fields"]["k1"], "v");
        let (_, stats) = call("GET", "/mock/wechat/stats?appid=wx_local", Value::Null).await;
        assert_eq!((stats["token_fetches"].as_u64(), stats["send_requests"].as_u64()), (Some(1), Some(1)));
    }
}
