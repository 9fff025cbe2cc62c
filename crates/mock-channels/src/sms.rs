//! A fake Tencent Cloud SMS: `SendSms` of API version 2021-01-11 (`POST /`, JSON body), and the
//! delivery-status callback (短信下发状态通知) it posts afterwards.
//!
//! Written from Tencent Cloud's documentation, not from our client:
//!
//! - "Signature v3" (published alike under every API 3.0 product, for example
//!   <https://tencentcloud.com/document/api/614/42761>): the canonical request, the string to
//!   sign, the derived keys `"TC3" + SecretKey` → date → service → `tc3_request`, the
//!   `Authorization` header, the five-minute limit on `X-TC-Timestamp`, and the signature
//!   failure codes
//!   (`AuthFailure.SignatureExpire`, `AuthFailure.SecretIdNotFound`,
//!   `AuthFailure.SignatureFailure`, …). The signing here is checked against that page's worked
//!   example in the tests below.
//! - "Responses" and "Error Codes" (common to every API 3.0 product): every answer is HTTP 200
//!   with a `Response` object carrying a `RequestId`; a failed request carries
//!   `Response.Error {Code, Message}` (`InvalidAction`, `NoSuchVersion`, `MissingParameter`,
//!   `UnknownParameter`, …).
//! - "SendSms" (<https://www.tencentcloud.com/document/api/382/40536>): the parameters
//!   (`PhoneNumberSet` of at most 200 E.164 numbers, all domestic or all international,
//!   `SmsSdkAppId`, `TemplateId`, `SignName`, `TemplateParamSet`, `SessionContext`, …) and the
//!   answer `Response.SendStatusSet[]` (`SerialNo`, `PhoneNumber`, `Fee`, `SessionContext`,
//!   `Code` — `"Ok"` when sent —, `Message`, `IsoCode`). The SMS error codes are those of the
//!   official Go SDK's `tencentcloud/sms/v20210111/errors.go` (`FailedOperation.PhoneNumberInBlacklist`,
//!   `InvalidParameterValue.IncorrectPhoneNumber`, `FailedOperation.TemplateIncorrectOrUnapproved`,
//!   `UnauthorizedOperation.SmsSdkAppIdVerifyFail`, …). A number that cannot be sent to gets its
//!   own status with the code, beside the others of the request, as the SDK's `SendStatus.Code`
//!   ("SMS request error code") describes; a fault of the request as a whole is a
//!   `Response.Error`.
//! - "SMS Sending Status Notification" (<https://www.tencentcloud.com/document/api/382/43547>):
//!   the callback is a `POST` of a JSON array of reports (`user_receive_time`, `nationcode`,
//!   `mobile`, `report_status` `SUCCESS` or `FAIL`, `errmsg` such as `DELIVRD`, `description`,
//!   `sid` — the `SerialNo` of the send); the receiver answers `{"result": 0, "errmsg": "OK"}`.
//!
//! What the fake adds for tests: accounts (SecretId, SecretKey and the SDK app ids they own),
//! approved templates and their parameter counts, blacklisted numbers, numbers whose messages are
//! accepted but never arrive (reported `FAIL`), the callback URL, and the messages it accepted.
//! Its clock is a function the test gives it.
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The fake's clock: milliseconds since the Unix epoch.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The action and version this fake answers; others are `InvalidAction` and `NoSuchVersion`.
pub const ACTION: &str = "SendSms";
pub const VERSION: &str = "2021-01-11";
/// The service named in the credential scope (the first label of `sms.tencentcloudapi.com`).
pub const SERVICE: &str = "sms";
/// How far `X-TC-Timestamp` may be from the fake's clock, as the signature documentation says.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// `PhoneNumberSet` holds at most this many numbers.
pub const MAX_NUMBERS: usize = 200;

/// The documented description of a delivered message, in the language of Tencent's sample.
const DELIVERED_DESCRIPTION: &str = "用户短信送达成功";
/// The `errmsg` of a `FAIL` report. Tencent's receipt codes are the carriers' own; this is the
/// carriers' (CMPP) "undeliverable" status.
pub const UNDELIVERED_ERRMSG: &str = "UNDELIV";

/// A message the fake accepted (`Code` `"Ok"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// E.164, as the send's status names it.
    pub phone: String,
    pub sdk_app_id: String,
    pub sign_name: String,
    pub template_id: String,
    pub params: Vec<String>,
    pub session_context: String,
    pub serial_no: String,
}

/// One delivery-status callback the fake posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackDelivery {
    pub url: String,
    /// The reports posted, as JSON.
    pub body: String,
    /// The receiver's HTTP status; `None` when it could not be reached.
    pub status: Option<u16>,
    /// Whether it answered `{"result": 0, …}`, as the documentation asks.
    pub acknowledged: bool,
}

/// The fake. Clones share one state; `router` serves it.
#[derive(Clone)]
pub struct SmsFake {
    inner: Arc<Inner>,
}

struct Inner {
    now_ms: NowMs,
    state: Mutex<FakeState>,
    http: reqwest::Client,
}

#[derive(Default)]
struct FakeState {
    /// SecretId → account.
    accounts: HashMap<String, Account>,
    /// TemplateId → number of parameters.
    templates: HashMap<String, usize>,
    blacklist: HashSet<String>,
    undeliverable: HashSet<String>,
    callback_url: Option<String>,
    messages: Vec<ReceivedMessage>,
    callbacks: Vec<CallbackDelivery>,
    sequence: u64,
}

struct Account {
    secret_key: String,
    sdk_app_ids: HashSet<String>,
}

impl SmsFake {
    pub fn new(now_ms: NowMs) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        SmsFake { inner: Arc::new(Inner { now_ms, state: Mutex::default(), http }) }
    }

    /// Registers an API key and an SMS application it owns. Calling it again with the same
    /// SecretId adds the application (and replaces the SecretKey).
    pub fn register_account(&self, secret_id: &str, secret_key: &str, sdk_app_id: &str) {
        let mut state = self.state();
        let account = state
            .accounts
            .entry(secret_id.to_string())
            .or_insert_with(|| Account { secret_key: secret_key.to_string(), sdk_app_ids: HashSet::new() });
        account.secret_key = secret_key.to_string();
        account.sdk_app_ids.insert(sdk_app_id.to_string());
    }

    /// Registers an approved body template taking `param_count` parameters.
    pub fn register_template(&self, template_id: &str, param_count: usize) {
        self.state().templates.insert(template_id.to_string(), param_count);
    }

    /// Puts an E.164 number on the blacklist: sends to it get `FailedOperation.PhoneNumberInBlacklist`.
    pub fn blacklist(&self, phone: &str) {
        self.state().blacklist.insert(phone.to_string());
    }

    /// Marks an E.164 number whose messages are accepted but never arrive: its report is `FAIL`.
    pub fn mark_undeliverable(&self, phone: &str) {
        self.state().undeliverable.insert(phone.to_string());
    }

    /// Where delivery-status reports are posted; none are posted until it is set.
    pub fn set_callback_url(&self, url: &str) {
        self.state().callback_url = Some(url.to_string());
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.state().messages.clone()
    }

    /// The delivery-status callbacks posted so far, oldest first.
    pub fn callbacks(&self) -> Vec<CallbackDelivery> {
        self.state().callbacks.clone()
    }

    /// The API route: `POST /`, as on `sms.tencentcloudapi.com`.
    pub fn router(&self) -> Router {
        Router::new().route("/", post(send_sms)).with_state(self.clone())
    }

    /// Serves the fake on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> i64 {
        (self.inner.now_ms)()
    }
}

/// An API error: `Response.Error`.
struct ApiError {
    code: &'static str,
    message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { code, message: message.into() }
}

async fn send_sms(State(fake): State<SmsFake>, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let request_id = {
        let mut state = fake.state();
        state.sequence += 1;
        format!("00000000-0000-4000-8000-{:012}", state.sequence)
    };
    let outcome = authenticate(&fake, &headers, &body).and_then(|secret_id| accept(&fake, &secret_id, &body));
    let answer = match outcome {
        Ok((statuses, reports)) => {
            if !reports.is_empty() {
                post_reports(&fake, reports);
            }
            json!({ "Response": { "SendStatusSet": statuses, "RequestId": request_id } })
        }
        Err(e) => json!({ "Response": { "Error": { "Code": e.code, "Message": e.message }, "RequestId": request_id } }),
    };
    axum::Json(answer)
}

/// Checks the TC3-HMAC-SHA256 signature, as "Signature v3" describes it; returns the SecretId.
fn authenticate(fake: &SmsFake, headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let authorization =
        header("authorization").ok_or_else(|| error("AuthFailure.InvalidAuthorization", "Authorization is missing"))?;
    let auth = parse_authorization(authorization)
        .ok_or_else(|| error("AuthFailure.InvalidAuthorization", "Authorization in the request header is invalid"))?;
    if !auth.signed_headers.iter().any(|h| h == "content-type") || !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(error("AuthFailure.InvalidAuthorization", "SignedHeaders must include content-type and host"));
    }
    let timestamp = header("x-tc-timestamp").ok_or_else(|| error("MissingParameter", "X-TC-Timestamp is missing"))?;
    let timestamp: i64 =
        timestamp.parse().map_err(|_| error("InvalidParameterValue", "X-TC-Timestamp is not an integer"))?;
    let now_secs = fake.now_ms().div_euclid(1000);
    if (now_secs - timestamp).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(error(
            "AuthFailure.SignatureExpire",
            "Signature expired. Timestamp and server time cannot differ by more than five minutes.",
        ));
    }
    let secret_key = fake.state().accounts.get(&auth.secret_id).map(|a| a.secret_key.clone());
    let Some(secret_key) = secret_key else {
        return Err(error("AuthFailure.SecretIdNotFound", "The SecretId is not found"));
    };
    // The server signs with its own service and the UTC date of the timestamp: a scope naming
    // another does not verify.
    let date = utc_date(timestamp);
    let scope_ok = auth.date == date && auth.service == SERVICE;
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let Some(value) = header(name) else {
            return Err(error(
                "AuthFailure.SignatureFailure",
                format!("the signed header {name} is not in the request"),
            ));
        };
        canonical_headers.push_str(&format!("{name}:{}\n", value.to_ascii_lowercase()));
    }
    let canonical = canonical_request(&canonical_headers, &auth.signed_headers.join(";"), body);
    let expected = signature(&secret_key, &date, SERVICE, &string_to_sign(timestamp, &date, SERVICE, &canonical));
    if !scope_ok || expected != auth.signature {
        return Err(error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        ));
    }
    if header("x-tc-action") != Some(ACTION) {
        return Err(error("InvalidAction", "The API does not exist"));
    }
    if header("x-tc-version") != Some(VERSION) {
        return Err(error("NoSuchVersion", "The API version does not exist"));
    }
    if header("x-tc-region").is_none_or(str::is_empty) {
        return Err(error("MissingParameter", "X-TC-Region is missing"));
    }
    Ok(auth.secret_id)
}

struct Authorization {
    secret_id: String,
    date: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

/// `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=<a;b>, Signature=<hex>`.
fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        fields.insert(key, value);
    }
    let mut credential = fields.get("Credential")?.split('/');
    let (secret_id, date, service, terminator) =
        (credential.next()?, credential.next()?, credential.next()?, credential.next()?);
    if terminator != "tc3_request" || credential.next().is_some() {
        return None;
    }
    Some(Authorization {
        secret_id: secret_id.to_string(),
        date: date.to_string(),
        service: service.to_string(),
        signed_headers: fields.get("SignedHeaders")?.split(';').map(str::to_string).collect(),
        signature: fields.get("Signature")?.to_string(),
    })
}

/// The canonical request of a `POST /`: method, URI `/`, empty query string, the canonical
/// headers (each `name:value\n`), the signed header names, and the payload's SHA-256 in hex.
fn canonical_request(canonical_headers: &str, signed_headers: &str, payload: &[u8]) -> String {
    format!("POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}", hex::encode(Sha256::digest(payload)))
}

fn string_to_sign(timestamp: i64, date: &str, service: &str, canonical_request: &str) -> String {
    let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{hashed}")
}

/// `HexEncode(HMAC_SHA256(SecretSigning, StringToSign))`, the key derived from
/// `"TC3" + SecretKey` through the date, the service and `tc3_request`.
fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    hex::encode(hmac_sha256(&secret_signing, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The UTC date of a Unix timestamp (seconds), `YYYY-MM-DD`.
fn utc_date(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// The parameters `SendSms` takes; any other is `UnknownParameter`.
const PARAMETERS: &[&str] = &[
    "PhoneNumberSet",
    "SmsSdkAppId",
    "TemplateId",
    "SignName",
    "TemplateParamSet",
    "ExtendCode",
    "SessionContext",
    "SenderId",
];

/// A delivery-status report to post.
struct Report {
    phone: Phone,
    serial_no: String,
    delivered: bool,
}

/// Reads the request and answers each number.
fn accept(fake: &SmsFake, secret_id: &str, body: &[u8]) -> Result<(Vec<Value>, Vec<Report>), ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| error("FailedOperation.JsonParseFail", format!("the request body is not JSON: {e}")))?;
    let request = request.as_object().ok_or_else(|| error("FailedOperation.JsonParseFail", "not a JSON object"))?;
    if let Some(unknown) = request.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(error("UnknownParameter", format!("The parameter `{unknown}` is not recognized")));
    }
    let string = |name: &str| -> Result<Option<String>, ApiError> {
        match request.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(error("InvalidParameter", format!("{name} must be a string"))),
        }
    };
    let strings = |name: &str| -> Result<Option<Vec<String>>, ApiError> {
        match request.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| error("InvalidParameter", format!("{name} must be an array of strings"))),
            Some(_) => Err(error("InvalidParameter", format!("{name} must be an array of strings"))),
        }
    };
    let numbers = strings("PhoneNumberSet")?.ok_or_else(|| error("MissingParameter", "PhoneNumberSet is missing"))?;
    let sdk_app_id = string("SmsSdkAppId")?.ok_or_else(|| error("MissingParameter", "SmsSdkAppId is missing"))?;
    let template_id = string("TemplateId")?.ok_or_else(|| error("MissingParameter", "TemplateId is missing"))?;
    let sign_name = string("SignName")?.unwrap_or_default();
    let params = strings("TemplateParamSet")?.unwrap_or_default();
    let session_context = string("SessionContext")?.unwrap_or_default();
    string("ExtendCode")?;
    string("SenderId")?;
    if numbers.is_empty() {
        return Err(error("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty"));
    }
    if numbers.len() > MAX_NUMBERS {
        return Err(error("LimitExceeded.PhoneNumberCountLimit", "more than 200 numbers in PhoneNumberSet"));
    }

    let mut state = fake.state();
    if !state.accounts.values().any(|a| a.sdk_app_ids.contains(&sdk_app_id)) {
        return Err(error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId does not exist"));
    }
    if !state.accounts.get(secret_id).is_some_and(|a| a.sdk_app_ids.contains(&sdk_app_id)) {
        return Err(error(
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "SmsSdkAppId does not belong to the account of the API key",
        ));
    }
    match state.templates.get(&template_id) {
        None => {
            return Err(error("FailedOperation.TemplateIncorrectOrUnapproved", "the template is not approved"));
        }
        Some(&count) if count != params.len() => {
            return Err(error(
                "FailedOperation.TemplateIncorrectOrUnapproved",
                format!("the template takes {count} parameters, {} were given", params.len()),
            ));
        }
        Some(_) => {}
    }
    let phones: Vec<Option<Phone>> = numbers.iter().map(|n| Phone::parse(n)).collect();
    let domestic = phones.iter().flatten().filter(|p| p.nation_code == "86").count();
    let valid = phones.iter().flatten().count();
    if domestic != 0 && domestic != valid {
        return Err(error(
            "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
            "the request holds both domestic and international numbers",
        ));
    }
    if domestic != 0 && sign_name.is_empty() {
        return Err(error("FailedOperation.SignatureIncorrectOrUnapproved", "SignName is required for domestic SMS"));
    }

    let now_ms = fake.now_ms();
    let mut statuses = Vec::new();
    let mut reports = Vec::new();
    for (number, phone) in numbers.iter().zip(phones) {
        let Some(phone) = phone else {
            statuses.push(refused(number, "", &session_context, "InvalidParameterValue.IncorrectPhoneNumber"));
            continue;
        };
        let e164 = phone.e164();
        if state.blacklist.contains(&e164) {
            statuses.push(refused(&e164, phone.iso_code, &session_context, "FailedOperation.PhoneNumberInBlacklist"));
            continue;
        }
        state.sequence += 1;
        let serial_no = format!("5000:{}{:015}", now_ms.max(0), state.sequence);
        state.messages.push(ReceivedMessage {
            phone: e164.clone(),
            sdk_app_id: sdk_app_id.clone(),
            sign_name: sign_name.clone(),
            template_id: template_id.clone(),
            params: params.clone(),
            session_context: session_context.clone(),
            serial_no: serial_no.clone(),
        });
        statuses.push(json!({
            "SerialNo": serial_no,
            "PhoneNumber": e164,
            "Fee": 1,
            "SessionContext": session_context,
            "Code": "Ok",
            "Message": "send success",
            "IsoCode": phone.iso_code,
        }));
        let delivered = !state.undeliverable.contains(&e164);
        reports.push(Report { phone, serial_no, delivered });
    }
    Ok((statuses, reports))
}

fn refused(phone: &str, iso_code: &str, session_context: &str, code: &str) -> Value {
    let message = match code {
        "FailedOperation.PhoneNumberInBlacklist" => "the number is in the blacklist",
        _ => "the number is not a valid mobile number",
    };
    json!({
        "SerialNo": "",
        "PhoneNumber": phone,
        "Fee": 0,
        "SessionContext": session_context,
        "Code": code,
        "Message": message,
        "IsoCode": iso_code,
    })
}

/// Posts the reports of one send to the callback URL, if one is set, in the documented format.
fn post_reports(fake: &SmsFake, reports: Vec<Report>) {
    let Some(url) = fake.state().callback_url.clone() else { return };
    // `user_receive_time` is Beijing time in the documented sample's format.
    let received = chrono::DateTime::from_timestamp_millis(fake.now_ms())
        .zip(chrono::FixedOffset::east_opt(8 * 3600))
        .map(|(t, beijing)| t.with_timezone(&beijing).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let body: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "user_receive_time": received,
                "nationcode": r.phone.nation_code,
                "mobile": r.phone.subscriber,
                "report_status": if r.delivered { "SUCCESS" } else { "FAIL" },
                "errmsg": if r.delivered { "DELIVRD" } else { UNDELIVERED_ERRMSG },
                "description": if r.delivered { DELIVERED_DESCRIPTION } else { "用户短信未送达" },
                "sid": r.serial_no,
            })
        })
        .collect();
    let body = Value::Array(body).to_string();
    let fake = fake.clone();
    tokio::spawn(async move {
        let sent =
            fake.inner.http.post(&url).header("Content-Type", "application/json").body(body.clone()).send().await;
        let (status, acknowledged) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let answer: Option<Value> = response.json().await.ok();
                (Some(status), answer.is_some_and(|a| a.get("result").and_then(Value::as_i64) == Some(0)))
            }
            Err(_) => (None, false),
        };
        fake.state().callbacks.push(CallbackDelivery { url, body, status, acknowledged });
    });
}

/// A mobile number split as the callback names it: country code and the number within it.
#[derive(Debug, Clone)]
struct Phone {
    nation_code: String,
    subscriber: String,
    iso_code: &'static str,
}

impl Phone {
    /// Reads a number as `SendSms` takes it: E.164 (`+` and 6 to 15 digits), or a domestic
    /// number written `0086…`, `86…` or as its bare 11 digits.
    fn parse(number: &str) -> Option<Phone> {
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let e164 = if let Some(digits) = number.strip_prefix('+') {
            (all_digits(digits) && (6..=15).contains(&digits.len())).then(|| digits.to_string())?
        } else if let Some(rest) = number.strip_prefix("0086").filter(|r| r.len() == 11 && all_digits(r)) {
            format!("86{rest}")
        } else if number.len() == 13 && number.starts_with("86") && all_digits(number) {
            number.to_string()
        } else if number.len() == 11 && number.starts_with('1') && all_digits(number) {
            format!("86{number}")
        } else {
            return None;
        };
        // Enough of the country codes for tests: the domestic one and those of the places
        // Tencent prices apart; any other is taken to be two digits long.
        const CODES: &[(&str, &str)] =
            &[("852", "HK"), ("853", "MO"), ("886", "TW"), ("86", "CN"), ("65", "SG"), ("1", "US")];
        let (nation_code, iso_code) =
            CODES.iter().find(|(code, _)| e164.starts_with(code)).map_or((&e164[..2], ""), |(c, iso)| (*c, *iso));
        if nation_code == "86" && e164.len() != 13 {
            return None;
        }
        Some(Phone {
            nation_code: nation_code.to_string(),
            subscriber: e164[nation_code.len()..].to_string(),
            iso_code,
        })
    }

    fn e164(&self) -> String {
        format!("+{}{}", self.nation_code, self.subscriber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    // Tencent's worked example in "Signature v3": CVM `DescribeInstances`, POSTed at
    // 1551113065 (2019-02-25 16:44:25 UTC) with these example keys. (Later editions of the page
    // mask the SecretId in places; the SecretKey and every hash are as published.)
    const EXAMPLE_SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const EXAMPLE_SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const EXAMPLE_TIMESTAMP: i64 = 1551113065;
    const EXAMPLE_PAYLOAD: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

    #[test]
    fn signs_the_documented_example() {
        let headers = "content-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n";
        let canonical = canonical_request(headers, "content-type;host", EXAMPLE_PAYLOAD.as_bytes());
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
             content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        // The date is the UTC one: 2019-02-26 in Beijing, 2019-02-25 in the scope.
        assert_eq!(utc_date(EXAMPLE_TIMESTAMP), "2019-02-25");
        let to_sign = string_to_sign(EXAMPLE_TIMESTAMP, "2019-02-25", "cvm", &canonical);
        assert_eq!(
            to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            signature(EXAMPLE_SECRET_KEY, "2019-02-25", "cvm", &to_sign),
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        let auth = parse_authorization(&format!(
            "TC3-HMAC-SHA256 Credential={EXAMPLE_SECRET_ID}/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        ))
        .unwrap();
        assert_eq!(
            (auth.secret_id.as_str(), auth.date.as_str(), auth.service.as_str()),
            (EXAMPLE_SECRET_ID, "2019-02-25", "cvm")
        );
        assert_eq!(auth.signed_headers, ["content-type", "host"]);
        assert!(
            parse_authorization("TC3-HMAC-SHA256 Credential=a/b/c/other, SignedHeaders=host, Signature=x").is_none()
        );
        assert!(
            parse_authorization("HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=x").is_none()
        );
    }

    #[test]
    fn numbers_are_read_as_send_sms_takes_them() {
        let e164 = |n: &str| Phone::parse(n).map(|p| (p.e164(), p.nation_code, p.subscriber, p.iso_code));
        let domestic = Some(("+8613800000000".to_string(), "86".to_string(), "13800000000".to_string(), "CN"));
        for written in ["+8613800000000", "008613800000000", "8613800000000", "13800000000"] {
            assert_eq!(e164(written), domestic, "{written}");
        }
        assert_eq!(e164("+85291234567").map(|p| (p.1, p.3)), Some(("852".into(), "HK")));
        for bad in ["", "+", "+86138", "+861380000000", "138000000001", "+86-13800000000", "+1234567890123456"] {
            assert!(Phone::parse(bad).is_none(), "{bad}");
        }
    }

    const ID: &str = "AKIDfakeaccount0001";
    const KEY: &str = "fakesecretkey0001";
    const APP: &str = "1400006666";
    const TEMPLATE: &str = "1110";

    struct Running {
        fake: SmsFake,
        base: String,
        host: String,
        clock: Arc<AtomicI64>,
        http: reqwest::Client,
    }

    async fn start() -> Running {
        let clock = Arc::new(AtomicI64::new(1_700_000_000_000));
        let now = clock.clone();
        let fake = SmsFake::new(Arc::new(move || now.load(Ordering::SeqCst)));
        fake.register_account(ID, KEY, APP);
        fake.register_template(TEMPLATE, 2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake.clone().serve(listener));
        Running { fake, base: format!("http://{addr}/"), host: addr.to_string(), clock, http: reqwest::Client::new() }
    }

    /// What a test sends; each field can be spoiled on its own.
    struct Call {
        secret_id: String,
        secret_key: String,
        sign_for_host: Option<String>,
        service: String,
        timestamp_offset_secs: i64,
        action: String,
        version: String,
        signed_body: String,
        sent_body: Option<String>,
    }

    fn call(body: Value) -> Call {
        Call {
            secret_id: ID.into(),
            secret_key: KEY.into(),
            sign_for_host: None,
            service: SERVICE.into(),
            timestamp_offset_secs: 0,
            action: ACTION.into(),
            version: VERSION.into(),
            signed_body: body.to_string(),
            sent_body: None,
        }
    }

    fn send_body(numbers: &[&str]) -> Value {
        json!({
            "PhoneNumberSet": numbers,
            "SmsSdkAppId": APP,
            "SignName": "腾讯云",
            "TemplateId": TEMPLATE,
            "TemplateParamSet": ["1234", "5"],
            "SessionContext": "notice-1",
        })
    }

    impl Running {
        async fn post(&self, call: Call) -> Value {
            let content_type = "application/json; charset=utf-8";
            let timestamp = self.clock.load(Ordering::SeqCst).div_euclid(1000) + call.timestamp_offset_secs;
            let date = utc_date(timestamp);
            let host = call.sign_for_host.unwrap_or_else(|| self.host.clone());
            let canonical = canonical_request(
                &format!("content-type:{content_type}\nhost:{host}\n"),
                "content-type;host",
                call.signed_body.as_bytes(),
            );
            let signed = signature(
                &call.secret_key,
                &date,
                &call.service,
                &string_to_sign(timestamp, &date, &call.service, &canonical),
            );
            let authorization = format!(
                "TC3-HMAC-SHA256 Credential={}/{date}/{}/tc3_request, \
                 SignedHeaders=content-type;host, Signature={signed}",
                call.secret_id, call.service
            );
            self.http
                .post(&self.base)
                .header("Authorization", authorization)
                .header("Content-Type", content_type)
                .header("X-TC-Action", call.action)
                .header("X-TC-Version", call.version)
                .header("X-TC-Timestamp", timestamp.to_string())
                .header("X-TC-Region", "ap-guangzhou")
                .body(call.sent_body.unwrap_or(call.signed_body))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        }
    }

    fn error_code(answer: &Value) -> &str {
        answer["Response"]["Error"]["Code"].as_str().unwrap_or("")
    }

    #[tokio::test]
    async fn a_signed_send_is_accepted_and_each_number_answered() {
        let running = start().await;
        running.fake.blacklist("+8613900000002");
        let answer = running.post(call(send_body(&["+8613800000001", "+8613900000002", "1380000"]))).await;
        let response = &answer["Response"];
        assert!(response["RequestId"].as_str().is_some_and(|id| !id.is_empty()), "{answer}");
        let statuses = response["SendStatusSet"].as_array().unwrap();
        assert_eq!(statuses.len(), 3);
        assert_eq!(statuses[0]["Code"], "Ok");
        assert_eq!(statuses[0]["PhoneNumber"], "+8613800000001");
        assert_eq!(statuses[0]["SessionContext"], "notice-1");
        assert_eq!(statuses[0]["IsoCode"], "CN");
        let serial = statuses[0]["SerialNo"].as_str().unwrap();
        assert!(serial.starts_with("5000:"), "{serial}");
        assert_eq!(statuses[1]["Code"], "FailedOperation.PhoneNumberInBlacklist");
        assert_eq!(statuses[1]["SerialNo"], "");
        assert_eq!(statuses[2]["Code"], "InvalidParameterValue.IncorrectPhoneNumber");
        assert_eq!(
            running.fake.messages(),
            [ReceivedMessage {
                phone: "+8613800000001".into(),
                sdk_app_id: APP.into(),
                sign_name: "腾讯云".into(),
                template_id: TEMPLATE.into(),
                params: vec!["1234".into(), "5".into()],
                session_context: "notice-1".into(),
                serial_no: serial.into(),
            }]
        );
        // Every serial number is new.
        let again = running.post(call(send_body(&["+8613800000001"]))).await;
        assert_ne!(again["Response"]["SendStatusSet"][0]["SerialNo"].as_str().unwrap(), serial);
    }

    #[tokio::test]
    async fn requests_that_do_not_verify_are_refused_with_the_documented_codes() {
        let running = start().await;
        let body = send_body(&["+8613800000001"]);
        let cases: Vec<(&str, Call)> = vec![
            ("AuthFailure.SignatureFailure", Call { secret_key: "wrong".into(), ..call(body.clone()) }),
            ("AuthFailure.SecretIdNotFound", Call { secret_id: "AKIDunknown".into(), ..call(body.clone()) }),
            ("AuthFailure.SignatureExpire", Call { timestamp_offset_secs: 301, ..call(body.clone()) }),
            ("AuthFailure.SignatureExpire", Call { timestamp_offset_secs: -301, ..call(body.clone()) }),
            ("AuthFailure.SignatureFailure", Call { service: "cvm".into(), ..call(body.clone()) }),
            (
                "AuthFailure.SignatureFailure",
                Call { sign_for_host: Some("sms.tencentcloudapi.com".into()), ..call(body.clone()) },
            ),
            (
                "AuthFailure.SignatureFailure",
                Call { sent_body: Some(send_body(&["+8613800000009"]).to_string()), ..call(body.clone()) },
            ),
            ("InvalidAction", Call { action: "SendSmsX".into(), ..call(body.clone()) }),
            ("NoSuchVersion", Call { version: "2019-07-11".into(), ..call(body.clone()) }),
        ];
        for (code, c) in cases {
            let answer = running.post(c).await;
            assert_eq!(error_code(&answer), code, "{answer}");
            assert!(answer["Response"]["RequestId"].is_string());
        }
        // Within five minutes either way is on time.
        for offset in [-299, 299] {
            let answer = running.post(Call { timestamp_offset_secs: offset, ..call(body.clone()) }).await;
            assert_eq!(answer["Response"]["SendStatusSet"][0]["Code"], "Ok", "{answer}");
        }
        assert_eq!(running.fake.messages().len(), 2);
    }

    #[tokio::test]
    async fn the_request_is_checked_against_what_was_registered() {
        let running = start().await;
        running.fake.register_account("AKIDother", "otherkey", "1400009999");
        let with = |changes: &[(&str, Value)]| {
            let mut body = send_body(&["+8613800000001"]);
            for (name, value) in changes {
                if value.is_null() {
                    body.as_object_mut().unwrap().remove(*name);
                } else {
                    body[*name] = value.clone();
                }
            }
            call(body)
        };
        let cases = vec![
            ("InvalidParameterValue.SdkAppIdNotExist", with(&[("SmsSdkAppId", json!("1400000000"))])),
            ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", with(&[("SmsSdkAppId", json!("1400009999"))])),
            ("FailedOperation.TemplateIncorrectOrUnapproved", with(&[("TemplateId", json!("999"))])),
            ("FailedOperation.TemplateIncorrectOrUnapproved", with(&[("TemplateParamSet", json!(["1234"]))])),
            ("MissingParameter", with(&[("TemplateId", Value::Null)])),
            ("MissingParameter", with(&[("PhoneNumberSet", Value::Null)])),
            ("MissingParameter.EmptyPhoneNumberSet", with(&[("PhoneNumberSet", json!([]))])),
            ("UnknownParameter", with(&[("SmsSdkAppid", json!(APP))])),
            ("InvalidParameter", with(&[("TemplateParamSet", json!([1234, 5]))])),
            ("FailedOperation.SignatureIncorrectOrUnapproved", with(&[("SignName", Value::Null)])),
            (
                "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
                with(&[("PhoneNumberSet", json!(["+8613800000001", "+6591234567"]))]),
            ),
            ("LimitExceeded.PhoneNumberCountLimit", with(&[("PhoneNumberSet", json!(vec!["+8613800000001"; 201]))])),
        ];
        for (code, c) in cases {
            let answer = running.post(c).await;
            assert_eq!(error_code(&answer), code, "{answer}");
        }
        let not_json = Call { signed_body: "{".into(), ..call(Value::Null) };
        assert_eq!(error_code(&running.post(not_json).await), "FailedOperation.JsonParseFail");
        assert!(running.fake.messages().is_empty());
    }

    #[tokio::test]
    async fn delivery_reports_are_posted_in_the_documented_format() {
        use axum::routing::post as route_post;
        let running = start().await;
        running.fake.mark_undeliverable("+8613900000002");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let receiver = Router::new().route(
            "/sms/callback",
            route_post(move |body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(body);
                    axum::Json(json!({"result": 0, "errmsg": "OK"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sms/callback", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, receiver).await });

        // Nothing is posted before a callback URL is set.
        running.post(call(send_body(&["+8613800000001"]))).await;
        running.fake.set_callback_url(&url);
        let answer = running.post(call(send_body(&["+8613800000001", "+8613900000002"]))).await;
        let serials: Vec<&str> = answer["Response"]["SendStatusSet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SerialNo"].as_str().unwrap())
            .collect();

        let body = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        let reports: Value = serde_json::from_str(&body).unwrap();
        let reports = reports.as_array().unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0]["sid"], serials[0]);
        assert_eq!(reports[0]["nationcode"], "86");
        assert_eq!(reports[0]["mobile"], "13800000001");
        assert_eq!(reports[0]["report_status"], "SUCCESS");
        assert_eq!(reports[0]["errmsg"], "DELIVRD");
        // 1_700_000_000 s is 2023-11-14 22:13:20 UTC, 2023-11-15 06:13:20 in Beijing.
        assert_eq!(reports[0]["user_receive_time"], "2023-11-15 06:13:20");
        assert!(reports[0]["description"].is_string());
        assert_eq!(reports[1]["sid"], serials[1]);
        assert_eq!(reports[1]["report_status"], "FAIL");
        assert_eq!(reports[1]["errmsg"], UNDELIVERED_ERRMSG);
        assert!(rx.try_recv().is_err(), "one post per send");

        // The receiver's documented answer is recorded as an acknowledgement.
        for _ in 0..50 {
            if !running.fake.callbacks().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let callbacks = running.fake.callbacks();
        assert_eq!(callbacks.len(), 1);
        assert_eq!((callbacks[0].status, callbacks[0].acknowledged), (Some(200), true));
        assert_eq!(callbacks[0].body, body);
    }
}
