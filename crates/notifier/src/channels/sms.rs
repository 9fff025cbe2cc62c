//! Text messages through Tencent Cloud SMS: `SendSms` of API version 2021-01-11, signed with
//! TC3-HMAC-SHA256, and the delivery-status callback Tencent posts after a send.
//!
//! Each part follows Tencent Cloud's documentation:
//!
//! - signing: "Signature v3", published alike under every API 3.0 product (for example
//!   <https://tencentcloud.com/document/api/614/42761>);
//!   [`authorization`] is held to that page's worked example in the tests below;
//! - the request and its answer: "SendSms" (<https://www.tencentcloud.com/document/api/382/40536>)
//!   and the common "Responses" page: every answer is a `Response` object, either with
//!   `SendStatusSet[]` (one status per number, `Code` `"Ok"` when sent) or with
//!   `Error {Code, Message}`;
//! - what a code means: the official Go SDK's `tencentcloud/sms/v20210111/errors.go` and the
//!   common error codes (see [`outcome_of`]);
//! - the callback: "SMS Sending Status Notification"
//!   (<https://www.tencentcloud.com/document/api/382/43547>), see [`parse_status_reports`].
//!
//! `SendSms` is not idempotent: Tencent takes no request id to recognise a resend by. A send
//! whose answer was lost (a timeout, a reset connection) is reported retryable, as most such
//! requests never reached Tencent; the few that did are sent twice when retried.
use autodebit_runtime::PlatformClock;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// Tencent Cloud SMS's API endpoint.
pub const DEFAULT_BASE_URL: &str = "https://sms.tencentcloudapi.com";
pub const ACTION: &str = "SendSms";
pub const VERSION: &str = "2021-01-11";
/// The service named in the credential scope: the first label of the API host.
pub const SERVICE: &str = "sms";
/// The body's content type, signed as sent (the signature documentation warns that a charset
/// added by an HTTP library after signing breaks the signature).
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// What the callback receiver answers, as "SMS Sending Status Notification" documents it.
pub const STATUS_CALLBACK_ANSWER: &str = r#"{"result":0,"errmsg":"OK"}"#;

/// How long one `SendSms` call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A Tencent Cloud SMS client. Clones share the HTTP client.
#[derive(Clone)]
pub struct TencentSms {
    http: reqwest::Client,
    base_url: String,
    clock: PlatformClock,
}

impl fmt::Debug for TencentSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentSms").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// The account a message is sent from. `Debug` leaves the SecretKey out.
#[derive(Clone, Copy)]
pub struct SmsAccount<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    /// The SMS application (`SmsSdkAppId`, e.g. `1400006666`).
    pub sdk_app_id: &'a str,
    /// The approved signature (`SignName`), required for messages to mainland numbers.
    pub sign_name: &'a str,
    /// The API region (`X-TC-Region`), e.g. `ap-guangzhou`.
    pub region: &'a str,
}

impl fmt::Debug for SmsAccount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsAccount")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("sign_name", &self.sign_name)
            .field("region", &self.region)
            .finish()
    }
}

/// One message to one number. `Debug` shows how many parameters there are, not what they are
/// (they may be one-time codes).
#[derive(Clone, Copy)]
pub struct SmsMessage<'a> {
    /// E.164: `+8613800000000`.
    pub phone: &'a str,
    /// An approved body template (`TemplateId`).
    pub template_id: &'a str,
    /// The template's parameters, in its order (`TemplateParamSet`).
    pub params: &'a [String],
    /// Echoed back by Tencent (`SessionContext`, under 512 bytes): our notice id.
    pub session_context: &'a str,
}

impl fmt::Debug for SmsMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsMessage")
            .field("phone", &self.phone)
            .field("template_id", &self.template_id)
            .field("params", &format_args!("<{} values>", self.params.len()))
            .field("session_context", &self.session_context)
            .finish()
    }
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Tencent took the message; `serial_no` is the `sid` of its delivery report.
    Sent { serial_no: String },
    /// This payer's number cannot be sent to (invalid, blacklisted, over its own limits).
    Refused { code: String, message: String },
    /// The send failed; `retryable` says whether the same request may succeed later.
    Failed { retryable: bool, detail: String },
}

impl TencentSms {
    /// `base_url` is [`DEFAULT_BASE_URL`] in production; tests point it at a fake.
    /// `X-TC-Timestamp` is read from `clock`.
    pub fn new(http: reqwest::Client, base_url: impl Into<String>, clock: PlatformClock) -> Self {
        TencentSms { http, base_url: base_url.into(), clock }
    }

    pub async fn send(&self, account: &SmsAccount<'_>, msg: &SmsMessage<'_>) -> SendResult {
        let url = match reqwest::Url::parse(&self.base_url) {
            Ok(url) => url,
            Err(e) => return failed(false, format!("the SMS base URL {:?} is not a URL: {e}", self.base_url)),
        };
        let Some(host) = url.host_str().map(|h| match url.port() {
            Some(port) => format!("{h}:{port}"),
            None => h.to_string(),
        }) else {
            return failed(false, format!("the SMS base URL {:?} names no host", self.base_url));
        };
        let body = json!({
            "PhoneNumberSet": [msg.phone],
            "SmsSdkAppId": account.sdk_app_id,
            "SignName": account.sign_name,
            "TemplateId": msg.template_id,
            "TemplateParamSet": msg.params,
            "SessionContext": msg.session_context,
        })
        .to_string();
        let timestamp = self.clock.now_ms().div_euclid(1000);
        let authorization = authorization(
            account.secret_id,
            account.secret_key,
            SERVICE,
            &host,
            CONTENT_TYPE,
            timestamp,
            body.as_bytes(),
        );
        let sent = self
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header("Authorization", authorization)
            .header("Content-Type", CONTENT_TYPE)
            .header("Host", &host)
            .header("X-TC-Action", ACTION)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("X-TC-Region", account.region)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return failed(true, format!("SendSms: {e}")),
        };
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(answer) => read_answer(status, &answer, msg.phone),
            Err(e) => failed(true, format!("SendSms: reading the answer: {e}")),
        }
    }
}

fn failed(retryable: bool, detail: String) -> SendResult {
    SendResult::Failed { retryable, detail }
}

/// Reads `SendSms`'s answer for the one number sent to. Tencent answers HTTP 200 whatever the
/// outcome; any other status came from something in between.
fn read_answer(status: u16, body: &[u8], phone: &str) -> SendResult {
    if !(200..300).contains(&status) {
        let retryable = status >= 500 || status == 429;
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        return failed(retryable, format!("SendSms: HTTP {status}: {shown}"));
    }
    let answer: Value = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return failed(true, format!("SendSms: the answer is not JSON: {e}")),
    };
    let response = &answer["Response"];
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(error) = response.get("Error") {
        return outcome_of(&text(error, "Code"), &text(error, "Message"));
    }
    let statuses = response.get("SendStatusSet").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let Some(sent) =
        statuses.iter().find(|s| s.get("PhoneNumber").and_then(Value::as_str) == Some(phone)).or(statuses.first())
    else {
        return failed(false, format!("SendSms: the answer has neither SendStatusSet nor Error: {answer}"));
    };
    let code = text(sent, "Code");
    if code != "Ok" {
        return outcome_of(&code, &text(sent, "Message"));
    }
    match text(sent, "SerialNo") {
        serial_no if serial_no.is_empty() => failed(false, format!("SendSms: sent without a SerialNo: {sent}")),
        serial_no => SendResult::Sent { serial_no },
    }
}

/// Codes that mean this number cannot be sent to, now or at all: a number that is not a mobile
/// number, one on the blacklist (the user unsubscribed, or a carrier's blacklist), the limits
/// Tencent counts per number, and a number in a region SMS does not reach.
const REFUSED: &[&str] = &[
    "InvalidParameterValue.IncorrectPhoneNumber",
    "FailedOperation.PhoneNumberInBlacklist",
    "LimitExceeded.PhoneNumberDailyLimit",
    "LimitExceeded.PhoneNumberOneHourLimit",
    "LimitExceeded.PhoneNumberThirtySecondLimit",
    "LimitExceeded.PhoneNumberSameContentDailyLimit",
    // Spelt so by Tencent.
    "UnsupportedOperation.UnsuportedRegion",
];

/// What a code other than `"Ok"` means, from a number's status or from `Response.Error`:
///
/// - [`REFUSED`] codes: `Refused`;
/// - faults on Tencent's side and rates over the limit: `InternalError` and its sub-codes,
///   `RequestLimitExceeded` and its sub-codes, `ServiceUnavailable`, `ResourceUnavailable`, and
///   `LimitExceeded.DeliveryFrequencyLimit` (the account's sending-rate policy, not one
///   number's): retryable `Failed`;
/// - anything else (authentication, parameters, templates, signatures, the application's daily
///   quota, balance, an unknown code): `Failed`, not retryable, as the same request would fail
///   the same way.
pub fn outcome_of(code: &str, message: &str) -> SendResult {
    if REFUSED.contains(&code) {
        return SendResult::Refused { code: code.to_string(), message: message.to_string() };
    }
    let under = |family: &str| code == family || code.strip_prefix(family).is_some_and(|rest| rest.starts_with('.'));
    let retryable = under("InternalError")
        || under("RequestLimitExceeded")
        || code == "ServiceUnavailable"
        || code == "ResourceUnavailable"
        || code == "LimitExceeded.DeliveryFrequencyLimit";
    failed(retryable, format!("SendSms: {code}: {message}"))
}

/// The `Authorization` header of a POST to `/` with an empty query string, signing
/// `content-type` and `host`, as "Signature v3" describes it.
pub fn authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    host: &str,
    content_type: &str,
    timestamp: i64,
    payload: &[u8],
) -> String {
    let date = utc_date(timestamp);
    let to_sign = string_to_sign(timestamp, service, &canonical_request(content_type, host, payload));
    let signature = signature(secret_key, &date, service, &to_sign);
    format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{date}/{service}/tc3_request, \
         SignedHeaders=content-type;host, Signature={signature}"
    )
}

/// `POST`, `/`, the empty query string, the canonical headers (names and values lowercased and
/// trimmed, sorted: `content-type` then `host`), the signed header names, and the payload's
/// SHA-256 in lowercase hex, one per line.
pub fn canonical_request(content_type: &str, host: &str, payload: &[u8]) -> String {
    let (content_type, host) = (content_type.trim().to_ascii_lowercase(), host.trim().to_ascii_lowercase());
    format!(
        "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\ncontent-type;host\n{}",
        hex::encode(Sha256::digest(payload))
    )
}

/// The algorithm, the timestamp, the credential scope (`<UTC date>/<service>/tc3_request`) and
/// the canonical request's SHA-256 in lowercase hex, one per line.
pub fn string_to_sign(timestamp: i64, service: &str, canonical_request: &str) -> String {
    let date = utc_date(timestamp);
    let hashed = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{hashed}")
}

/// The signature: the key is derived by HMAC-SHA256 from `"TC3" + SecretKey` through the date,
/// the service and `tc3_request`, then signs the string to sign; lowercase hex.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
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

/// The UTC date of a Unix timestamp in seconds, `YYYY-MM-DD`: the date of the credential scope
/// is always UTC, whatever the local time zone.
pub fn utc_date(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

/// One report of Tencent's delivery-status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// `sid`: the `SerialNo` the send answered.
    pub serial_no: String,
    /// E.164, from `nationcode` and `mobile` (`mobile` alone when no `nationcode` is given).
    pub phone: String,
    /// `report_status` is `SUCCESS` (the other documented value is `FAIL`).
    pub delivered: bool,
    /// `errmsg`: the receipt status code, `DELIVRD` when delivered.
    pub code: String,
    /// `description` of the receipt status.
    pub description: String,
    /// `user_receive_time`, as Tencent writes it (`2015-10-17 08:03:04`, Beijing time).
    pub received_at: String,
}

/// Parses the body of Tencent's delivery-status callback (短信下发状态通知): a JSON array of
/// reports, possibly several in one post, each with `user_receive_time`, `nationcode`, `mobile`,
/// `report_status`, `errmsg`, `description` and `sid`. A report without `sid`, `mobile` or
/// `report_status` makes the whole body an error; fields the documentation does not list (such
/// as `ext`) are ignored. Answer the post with [`STATUS_CALLBACK_ANSWER`].
pub fn parse_status_reports(body: &[u8]) -> Result<Vec<StatusReport>, String> {
    let reports: Value =
        serde_json::from_slice(body).map_err(|e| format!("the status callback body is not JSON: {e}"))?;
    let reports = reports.as_array().ok_or("the status callback body is not a JSON array")?;
    reports
        .iter()
        .enumerate()
        .map(|(i, report)| {
            let field = |name: &str| match report.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!("report {i}: {name} is not a string: {other}")),
            };
            let required = |name: &str| field(name)?.ok_or_else(|| format!("report {i} has no {name}"));
            let mobile = required("mobile")?;
            let phone = match field("nationcode")? {
                Some(nation) if !nation.is_empty() && !mobile.starts_with('+') => format!("+{nation}{mobile}"),
                _ => mobile,
            };
            Ok(StatusReport {
                serial_no: required("sid")?,
                phone,
                delivered: required("report_status")? == "SUCCESS",
                code: field("errmsg")?.unwrap_or_default(),
                description: field("description")?.unwrap_or_default(),
                received_at: field("user_receive_time")?.unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_mock_channels::sms::SmsFake;
    use std::sync::Arc;

    // "Signature v3"'s worked example: CVM `DescribeInstances` in ap-guangzhou, with the
    // documentation's example keys, at 1551113065 (2019-02-25 16:44:25 UTC). Later editions of
    // the page mask the SecretId in places; the SecretKey and every hash are as published.
    const EXAMPLE_SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const EXAMPLE_SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const EXAMPLE_TIMESTAMP: i64 = 1551113065;
    const EXAMPLE_PAYLOAD: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

    #[test]
    fn signs_tencents_published_example() {
        let canonical = canonical_request(CONTENT_TYPE, "cvm.tencentcloudapi.com", EXAMPLE_PAYLOAD.as_bytes());
        assert_eq!(
            canonical,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
             content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let to_sign = string_to_sign(EXAMPLE_TIMESTAMP, "cvm", &canonical);
        assert_eq!(
            to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            signature(EXAMPLE_SECRET_KEY, "2019-02-25", "cvm", &to_sign),
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            authorization(
                EXAMPLE_SECRET_ID,
                EXAMPLE_SECRET_KEY,
                "cvm",
                "cvm.tencentcloudapi.com",
                CONTENT_TYPE,
                EXAMPLE_TIMESTAMP,
                EXAMPLE_PAYLOAD.as_bytes()
            ),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    /// The documentation's warning: 1551113065 is 2019-02-26 00:44:25 in UTC+8, and the scope
    /// must still say 2019-02-25.
    #[test]
    fn the_scope_date_is_the_utc_one() {
        assert_eq!(utc_date(EXAMPLE_TIMESTAMP), "2019-02-25");
        assert_eq!(utc_date(1551139199), "2019-02-25");
        assert_eq!(utc_date(1551139200), "2019-02-26");
    }

    #[test]
    fn every_documented_code_is_read_as_refused_or_retryable_or_final() {
        #[derive(Debug, PartialEq)]
        enum Reading {
            Refused,
            Retryable,
            Final,
        }
        use Reading::*;
        let expected = [
            ("FailedOperation.PhoneNumberInBlacklist", Refused),
            ("InvalidParameterValue.IncorrectPhoneNumber", Refused),
            ("LimitExceeded.PhoneNumberDailyLimit", Refused),
            ("LimitExceeded.PhoneNumberOneHourLimit", Refused),
            ("LimitExceeded.PhoneNumberThirtySecondLimit", Refused),
            ("LimitExceeded.PhoneNumberSameContentDailyLimit", Refused),
            ("UnsupportedOperation.UnsuportedRegion", Refused),
            ("InternalError", Retryable),
            ("InternalError.OtherError", Retryable),
            ("InternalError.RequestTimeException", Retryable),
            ("InternalError.SendAndRecvFail", Retryable),
            ("InternalError.Timeout", Retryable),
            ("InternalError.UnknownError", Retryable),
            ("RequestLimitExceeded", Retryable),
            ("RequestLimitExceeded.UinLimitExceeded", Retryable),
            ("RequestLimitExceeded.IPLimitExceeded", Retryable),
            ("ServiceUnavailable", Retryable),
            ("ResourceUnavailable", Retryable),
            ("LimitExceeded.DeliveryFrequencyLimit", Retryable),
            ("AuthFailure.SignatureFailure", Final),
            ("AuthFailure.SecretIdNotFound", Final),
            ("AuthFailure.SignatureExpire", Final),
            ("AuthFailure.InvalidAuthorization", Final),
            ("InvalidAction", Final),
            ("NoSuchVersion", Final),
            ("InvalidParameter", Final),
            ("MissingParameter", Final),
            ("UnknownParameter", Final),
            ("InvalidParameterValue.SdkAppIdNotExist", Final),
            ("InvalidParameterValue.TemplateParameterLengthLimit", Final),
            ("FailedOperation.TemplateIncorrectOrUnapproved", Final),
            ("FailedOperation.SignatureIncorrectOrUnapproved", Final),
            ("FailedOperation.InsufficientBalanceInSmsPackage", Final),
            ("FailedOperation.ContainSensitiveWord", Final),
            ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", Final),
            ("UnauthorizedOperation.SerivceSuspendDueToArrears", Final),
            ("LimitExceeded.AppDailyLimit", Final),
            ("LimitExceeded.PhoneNumberCountLimit", Final),
            ("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", Final),
            // Only whole code families are read by prefix.
            ("InternalErrorLike", Final),
            ("", Final),
        ];
        for (code, reading) in expected {
            let got = match outcome_of(code, "m") {
                SendResult::Refused { code: c, message } => {
                    assert_eq!((c.as_str(), message.as_str()), (code, "m"));
                    Refused
                }
                SendResult::Failed { retryable: true, .. } => Retryable,
                SendResult::Failed { retryable: false, .. } => Final,
                SendResult::Sent { .. } => panic!("{code} read as sent"),
            };
            assert_eq!(got, reading, "{code}");
        }
    }

    #[test]
    fn answers_are_read_for_the_number_sent_to() {
        // The answer Tencent's SDK documentation shows for a send to two numbers.
        let documented = br#"{"Response": {"RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279", "SendStatusSet": [
            {"Code": "Ok", "Fee": 1, "IsoCode": "CN", "Message": "send success", "PhoneNumber": "+8618511122233",
             "SerialNo": "5000:1045710669157053657849499619", "SessionContext": "test"},
            {"Code": "Ok", "Fee": 1, "IsoCode": "CN", "Message": "send success", "PhoneNumber": "+8618511122266",
             "SerialNo": "5000:1045710669157053657849499718", "SessionContext": "test"}]}}"#;
        assert_eq!(
            read_answer(200, documented, "+8618511122266"),
            SendResult::Sent { serial_no: "5000:1045710669157053657849499718".into() }
        );
        let blacklisted =
            br#"{"Response": {"RequestId": "r", "SendStatusSet": [{"Code": "FailedOperation.PhoneNumberInBlacklist",
            "Message": "blacklisted", "PhoneNumber": "+8613800000000", "SerialNo": "", "Fee": 0}]}}"#;
        assert_eq!(
            read_answer(200, blacklisted, "+8613800000000"),
            SendResult::Refused {
                code: "FailedOperation.PhoneNumberInBlacklist".into(),
                message: "blacklisted".into()
            }
        );
        let error = br#"{"Response": {"Error": {"Code": "AuthFailure.SignatureFailure",
            "Message": "The provided credentials could not be validated."}, "RequestId": "r"}}"#;
        assert!(failed_with(&read_answer(200, error, "+8613800000000"), false, "AuthFailure.SignatureFailure"));
        assert!(matches!(read_answer(502, b"bad gateway", "+86"), SendResult::Failed { retryable: true, .. }));
        assert!(matches!(read_answer(429, b"", "+86"), SendResult::Failed { retryable: true, .. }));
        assert!(matches!(read_answer(403, b"", "+86"), SendResult::Failed { retryable: false, .. }));
        assert!(matches!(read_answer(200, b"<html>", "+86"), SendResult::Failed { retryable: true, .. }));
        let neither = br#"{"Response": {"RequestId": "r"}}"#;
        assert!(matches!(read_answer(200, neither, "+86"), SendResult::Failed { retryable: false, .. }));
        let no_serial = br#"{"Response": {"SendStatusSet": [{"Code": "Ok", "PhoneNumber": "+86"}], "RequestId": "r"}}"#;
        assert!(matches!(read_answer(200, no_serial, "+86"), SendResult::Failed { retryable: false, .. }));
    }

    #[test]
    fn status_reports_are_parsed_as_documented() {
        // The documented sample, with an `ext` field as real callbacks carry, and a failure.
        let body = r#"[
            {"user_receive_time": "2015-10-17 08:03:04", "nationcode": "86", "mobile": "13xxxxxxxxx",
             "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功", "sid": "xxxxxxx",
             "ext": {"extend": ""}},
            {"user_receive_time": "2015-10-17 08:03:05", "nationcode": "86", "mobile": "13800000000",
             "report_status": "FAIL", "errmsg": "UNDELIV", "description": "failed", "sid": "5000:2"}
        ]"#;
        assert_eq!(
            parse_status_reports(body.as_bytes()).unwrap(),
            [
                StatusReport {
                    serial_no: "xxxxxxx".into(),
                    phone: "+8613xxxxxxxxx".into(),
                    delivered: true,
                    code: "DELIVRD".into(),
                    description: "用户短信送达成功".into(),
                    received_at: "2015-10-17 08:03:04".into(),
                },
                StatusReport {
                    serial_no: "5000:2".into(),
                    phone: "+8613800000000".into(),
                    delivered: false,
                    code: "UNDELIV".into(),
                    description: "failed".into(),
                    received_at: "2015-10-17 08:03:05".into(),
                },
            ]
        );
        assert!(parse_status_reports(b"[]").unwrap().is_empty());
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"[{"mobile": "13800000000", "report_status": "SUCCESS"}]"#,
            br#"[{"sid": "1", "report_status": "SUCCESS"}]"#,
            br#"[{"sid": "1", "mobile": "13800000000"}]"#,
            br#"[{"sid": 1, "mobile": "13800000000", "report_status": "SUCCESS"}]"#,
            br#"[7]"#,
        ] {
            assert!(parse_status_reports(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let answer: Value = serde_json::from_str(STATUS_CALLBACK_ANSWER).unwrap();
        assert_eq!(answer, json!({"result": 0, "errmsg": "OK"}));
    }

    #[test]
    fn debug_leaves_secrets_out() {
        let account = SmsAccount {
            secret_id: "AKIDx",
            secret_key: "the-secret-key",
            sdk_app_id: "1400006666",
            sign_name: "s",
            region: "ap-guangzhou",
        };
        let shown = format!("{account:?}");
        assert!(!shown.contains("the-secret-key") && shown.contains("AKIDx"), "{shown}");
        let params = ["482913".to_string()];
        let msg = SmsMessage { phone: "+8613800000000", template_id: "1", params: &params, session_context: "n1" };
        let shown = format!("{msg:?}");
        assert!(!shown.contains("482913") && shown.contains("<1 values>"), "{shown}");
    }

    /// Whether `result` is `Failed`, retryable or not as `retryable` says, naming `code`.
    fn failed_with(result: &SendResult, retryable: bool, code: &str) -> bool {
        matches!(result, SendResult::Failed { retryable: r, detail } if *r == retryable && detail.contains(code))
    }

    const ID: &str = "AKIDautodebittest01";
    const KEY: &str = "autodebit-test-secret-key";
    const APP: &str = "1400006666";
    const TEMPLATE: &str = "1110";

    fn account(secret_key: &str) -> SmsAccount<'_> {
        SmsAccount { secret_id: ID, secret_key, sdk_app_id: APP, sign_name: "自动扣款", region: "ap-guangzhou" }
    }

    /// A platform test clock three days ahead of the system clock, so that a timestamp not read
    /// from it is refused as expired.
    async fn ahead_clock() -> (PlatformClock, tempfile::TempDir) {
        use autodebit_eventstore::{EventStore, StoreOptions, testing::sqlite_url};
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(StoreOptions::new(sqlite_url(dir.path()))).await.unwrap();
        let clock = PlatformClock::test(&store, &autodebit_runtime::Shutdown::new()).await.unwrap();
        clock.advance(Duration::from_secs(3 * 86_400)).await.unwrap();
        (clock, dir)
    }

    /// The fake on 127.0.0.1, its clock `skew_ms` off the platform's.
    async fn start_fake(clock: &PlatformClock, skew_ms: i64) -> (SmsFake, String) {
        let read = clock.clone();
        let fake = SmsFake::new(Arc::new(move || read.now_ms() + skew_ms));
        fake.register_account(ID, KEY, APP);
        fake.register_template(TEMPLATE, 2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(fake.clone().serve(listener));
        (fake, base)
    }

    #[tokio::test]
    async fn sends_through_the_fake() {
        let (clock, _dir) = ahead_clock().await;
        let (fake, base) = start_fake(&clock, 0).await;
        fake.blacklist("+8613900000002");
        let sms = TencentSms::new(reqwest::Client::new(), &base, clock.clone());
        let params = ["2024-07-01".to_string(), "39.00".to_string()];
        let msg = |phone| SmsMessage { phone, template_id: TEMPLATE, params: &params, session_context: "notice-42" };

        let sent = sms.send(&account(KEY), &msg("+8613800000001")).await;
        let SendResult::Sent { serial_no } = sent else { panic!("{sent:?}") };
        let received = fake.messages();
        assert_eq!(received.len(), 1);
        let m = &received[0];
        assert_eq!(
            (m.phone.as_str(), m.template_id.as_str(), m.params.as_slice(), m.session_context.as_str()),
            ("+8613800000001", TEMPLATE, &params[..], "notice-42")
        );
        assert_eq!(
            (m.serial_no.as_str(), m.sdk_app_id.as_str(), m.sign_name.as_str()),
            (serial_no.as_str(), APP, "自动扣款")
        );

        let refused = sms.send(&account(KEY), &msg("+8613900000002")).await;
        assert!(
            matches!(&refused, SendResult::Refused { code, .. } if code == "FailedOperation.PhoneNumberInBlacklist"),
            "{refused:?}"
        );

        let wrong_key = sms.send(&account("not-the-key"), &msg("+8613800000001")).await;
        assert!(failed_with(&wrong_key, false, "AuthFailure.SignatureFailure"), "{wrong_key:?}");
        let wrong_template = sms.send(&account(KEY), &SmsMessage { template_id: "999", ..msg("+8613800000001") }).await;
        assert!(failed_with(&wrong_template, false, "TemplateIncorrectOrUnapproved"), "{wrong_template:?}");
        assert_eq!(fake.messages().len(), 1);
    }

    #[tokio::test]
    async fn the_timestamp_is_the_platform_clocks() {
        let (clock, _dir) = ahead_clock().await;
        // Six minutes apart: the fake refuses the signature as expired.
        let (_fake, base) = start_fake(&clock, 6 * 60_000).await;
        let sms = TencentSms::new(reqwest::Client::new(), base, clock.clone());
        let params = ["a".to_string(), "b".to_string()];
        let msg = SmsMessage { phone: "+8613800000001", template_id: TEMPLATE, params: &params, session_context: "n" };
        let expired = sms.send(&account(KEY), &msg).await;
        assert!(failed_with(&expired, false, "AuthFailure.SignatureExpire"), "{expired:?}");
    }

    #[tokio::test]
    async fn transport_failures_are_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let sms = TencentSms::new(reqwest::Client::new(), base, PlatformClock::system());
        let params = ["a".to_string(), "b".to_string()];
        let msg = SmsMessage { phone: "+8613800000001", template_id: TEMPLATE, params: &params, session_context: "n" };
        assert!(matches!(sms.send(&account(KEY), &msg).await, SendResult::Failed { retryable: true, .. }));
        let nowhere = TencentSms::new(reqwest::Client::new(), "not a url", PlatformClock::system());
        assert!(matches!(nowhere.send(&account(KEY), &msg).await, SendResult::Failed { retryable: false, .. }));
    }

    #[tokio::test]
    async fn the_fakes_delivery_reports_reach_a_receiver_and_parse() {
        use axum::routing::post;
        let (clock, _dir) = ahead_clock().await;
        let (fake, base) = start_fake(&clock, 0).await;
        fake.mark_undeliverable("+8613900000002");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<StatusReport>>();
        let receiver = axum::Router::new().route(
            "/callbacks/tencent-sms",
            post(move |body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(parse_status_reports(&body).unwrap());
                    ([("content-type", "application/json")], STATUS_CALLBACK_ANSWER)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.set_callback_url(&format!("http://{}/callbacks/tencent-sms", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, receiver).await });

        let sms = TencentSms::new(reqwest::Client::new(), base, clock.clone());
        let params = ["a".to_string(), "b".to_string()];
        for phone in ["+8613800000001", "+8613900000002"] {
            let msg = SmsMessage { phone, template_id: TEMPLATE, params: &params, session_context: "n" };
            let SendResult::Sent { serial_no } = sms.send(&account(KEY), &msg).await else { panic!("not sent") };
            let reports = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            assert_eq!(reports.len(), 1);
            let report = &reports[0];
            assert_eq!((report.serial_no.as_str(), report.phone.as_str()), (serial_no.as_str(), phone));
            let delivered = phone == "+8613800000001";
            assert_eq!(report.delivered, delivered);
            assert_eq!(report.code == "DELIVRD", delivered);
            assert!(!report.received_at.is_empty());
        }
        // The receiver's answer is the documented acknowledgement.
        for _ in 0..50 {
            if fake.callbacks().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(fake.callbacks().iter().all(|c| c.acknowledged), "{:?}", fake.callbacks());
    }
}
