//! WeChat Pay's merchant complaints API (v3, `/v3/merchant-service/complaints-v2`): payers who
//! complain about a deduction at WeChat Pay reach the merchant here. Listing by date, one
//! complaint's detail, the merchant's response and its completion, and the URL WeChat Pay
//! posts complaint notifications to (`COMPLAINT.CREATE`, `COMPLAINT.STATE_CHANGE`, resource
//! `{complaint_id, action_type}`).
//!
//! The limits are WeChat Pay's and are checked before anything is sent: a list page holds 1 to
//! 50, its dates span at most 30 days; a response is 1 to 200 characters.
use super::{V3Answer, WeChatPay, path_segment, v3_done, v3_error};
use crate::ProviderError;

/// At most this many complaints in one list page.
pub const MAX_PAGE: u32 = 50;
/// A list's dates span at most this many days.
pub const MAX_SPAN_DAYS: i64 = 30;
/// A response's words, at most.
pub const MAX_RESPONSE_CHARS: usize = 200;

/// An order a complaint is about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ComplaintOrder {
    #[serde(default)]
    pub transaction_id: String,
    #[serde(default)]
    pub out_trade_no: String,
    /// Fen.
    #[serde(default)]
    pub amount: i64,
}

/// A complaint as WeChat Pay describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Complaint {
    pub complaint_id: String,
    /// RFC 3339, e.g. `2026-12-01T10:00:00+08:00`.
    #[serde(default)]
    pub complaint_time: String,
    /// The payer's words.
    #[serde(default)]
    pub complaint_detail: String,
    /// PENDING, PROCESSING or PROCESSED.
    #[serde(default)]
    pub complaint_state: String,
    #[serde(default)]
    pub complaint_order_info: Vec<ComplaintOrder>,
    /// REFUND (the payer asks for the money back), SERVICE_NOT_WORK or OTHERS.
    #[serde(default)]
    pub problem_type: String,
    /// The FAQ title the payer picked before complaining.
    #[serde(default)]
    pub problem_description: String,
    /// Fen the payer asks back, for REFUND.
    #[serde(default)]
    pub apply_refund_amount: Option<i64>,
    #[serde(default)]
    pub complaint_full_refunded: bool,
    #[serde(default)]
    pub incoming_user_response: bool,
    #[serde(default)]
    pub user_complaint_times: i64,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ComplaintPage {
    #[serde(default)]
    pub data: Vec<Complaint>,
    #[serde(default)]
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
    #[serde(default)]
    pub total_count: u32,
}

/// The JSON of a 200 answer, or what the refusal says.
fn json<T: serde::de::DeserializeOwned>(path: &str, answer: V3Answer) -> Result<T, ProviderError> {
    if answer.status != 200 {
        return Err(match v3_done(path, answer) {
            Err(e) => e,
            Ok(()) => ProviderError::Transport(format!("{path}: an answer without content where one was due")),
        });
    }
    serde_json::from_str(&answer.body)
        .map_err(|e| ProviderError::Transport(format!("{path}: the answer does not read: {e}: {}", answer.body)))
}

impl WeChatPay {
    /// `GET /v3/merchant-service/complaints-v2`: complaints made from `begin` to `end` (Beijing
    /// dates, both included), `limit` (1 to 50) from `offset`.
    pub async fn complaints(
        &self,
        begin: chrono::NaiveDate,
        end: chrono::NaiveDate,
        offset: u32,
        limit: u32,
    ) -> Result<ComplaintPage, ProviderError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ProviderError::Invalid(format!("limit {limit} is not between 1 and {MAX_PAGE}")));
        }
        let span = (end - begin).num_days();
        if !(0..MAX_SPAN_DAYS).contains(&span) {
            return Err(ProviderError::Invalid(format!(
                "begin_date {begin} to end_date {end}: the end must not be before the begin, nor {MAX_SPAN_DAYS} days or more after it"
            )));
        }
        let path = format!(
            "/v3/merchant-service/complaints-v2?limit={limit}&offset={offset}&begin_date={}&end_date={}&complainted_mchid={}",
            begin.format("%Y-%m-%d"),
            end.format("%Y-%m-%d"),
            self.config.mch_id
        );
        let answer = self.call_v3(reqwest::Method::GET, &path, "").await?;
        json(&path, answer)
    }

    /// `GET /v3/merchant-service/complaints-v2/{complaint_id}`.
    pub async fn complaint(&self, complaint_id: &str) -> Result<Complaint, ProviderError> {
        let path = format!("/v3/merchant-service/complaints-v2/{}", path_segment("complaint_id", complaint_id)?);
        let answer = self.call_v3(reqwest::Method::GET, &path, "").await?;
        json(&path, answer)
    }

    /// `POST /v3/merchant-service/complaints-v2/{complaint_id}/response`: the merchant's words
    /// to the payer (1 to 200 characters).
    pub async fn respond_to_complaint(&self, complaint_id: &str, content: &str) -> Result<(), ProviderError> {
        let chars = content.chars().count();
        if chars == 0 || chars > MAX_RESPONSE_CHARS {
            return Err(ProviderError::Invalid(format!(
                "response_content has {chars} characters; WeChat Pay takes 1 to {MAX_RESPONSE_CHARS}"
            )));
        }
        let path =
            format!("/v3/merchant-service/complaints-v2/{}/response", path_segment("complaint_id", complaint_id)?);
        let body =
            serde_json::json!({"complainted_mchid": self.config.mch_id, "response_content": content}).to_string();
        let answer = self.call_v3(reqwest::Method::POST, &path, &body).await?;
        v3_done(&path, answer)
    }

    /// `POST /v3/merchant-service/complaints-v2/{complaint_id}/complete`: the merchant has
    /// dealt with it.
    pub async fn complete_complaint(&self, complaint_id: &str) -> Result<(), ProviderError> {
        let path =
            format!("/v3/merchant-service/complaints-v2/{}/complete", path_segment("complaint_id", complaint_id)?);
        let body = serde_json::json!({"complainted_mchid": self.config.mch_id}).to_string();
        let answer = self.call_v3(reqwest::Method::POST, &path, &body).await?;
        v3_done(&path, answer)
    }

    /// Where complaint notifications go: created (`POST`) when none is set, changed (`PUT`)
    /// when another is, left alone when it is `url` already.
    pub async fn set_complaint_notification_url(&self, url: &str) -> Result<(), ProviderError> {
        let path = "/v3/merchant-service/complaint-notifications";
        let current = self.call_v3(reqwest::Method::GET, path, "").await?;
        let body = serde_json::json!({"url": url}).to_string();
        let method = match current.status {
            200 => {
                let v: serde_json::Value = serde_json::from_str(&current.body).unwrap_or_default();
                if v.get("url").and_then(|u| u.as_str()) == Some(url) {
                    return Ok(());
                }
                reqwest::Method::PUT
            }
            404 => reqwest::Method::POST,
            _ => {
                let (code, message) = v3_error(&current.body);
                return Err(ProviderError::Transport(format!("{path}: HTTP {}: {code}: {message}", current.status)));
            }
        };
        let answer = self.call_v3(method, path, &body).await?;
        if answer.status == 200 { Ok(()) } else { v3_done(path, answer) }
    }
}
