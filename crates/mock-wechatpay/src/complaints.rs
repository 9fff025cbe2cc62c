//! WeChat Pay's merchant complaints (v3 `/v3/merchant-service/complaints-v2`), as its
//! documentation gives them: a payer's complaint about a debited order, listed by date (1 to 50
//! a page, dates at most 30 days apart), read one at a time, answered by the merchant (1 to 200
//! characters) and completed once; the merchant's notification URL
//! (`/v3/merchant-service/complaint-notifications`: `GET`, `POST`, `PUT`, `DELETE`), to which a
//! new complaint is posted as a signed v3 notice (`COMPLAINT.CREATE`, resource
//! `{complaint_id, action_type: "CREATE_COMPLAINT"}` encrypted under the APIv3 key).
//!
//! Tests make complaints with `POST /mock/complaints` (`{out_trade_no, problem_type,
//! complaint_detail, apply_refund_amount}`) and read what merchants did with
//! `GET /mock/complaints`.
use crate::state::{Mock, now_secs, roll};
use crate::v3::{v3_callback, v3_request};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{FixedOffset, NaiveDate, TimeZone};

/// A complaint the mock holds, with what the merchant did.
#[derive(Debug, Clone)]
pub(crate) struct Complaint {
    pub(crate) complaint_id: String,
    pub(crate) at_secs: i64,
    pub(crate) detail: String,
    pub(crate) problem_type: String,
    pub(crate) apply_refund_amount: Option<i64>,
    pub(crate) out_trade_no: String,
    pub(crate) transaction_id: String,
    pub(crate) amount: i64,
    /// PENDING, PROCESSING (answered), PROCESSED (completed).
    pub(crate) state: &'static str,
    pub(crate) responses: Vec<String>,
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

impl Complaint {
    fn json(&self) -> serde_json::Value {
        let time = beijing().timestamp_opt(self.at_secs, 0).single().map(|t| t.to_rfc3339()).unwrap_or_default();
        let mut v = serde_json::json!({
            "complaint_id": self.complaint_id,
            "complaint_time": time,
            "complaint_detail": self.detail,
            "complaint_state": self.state,
            "complaint_order_info": [{"transaction_id": self.transaction_id, "out_trade_no": self.out_trade_no,
                                      "amount": self.amount}],
            "complaint_full_refunded": false,
            "incoming_user_response": false,
            "user_complaint_times": 1,
            "problem_description": "",
            "problem_type": self.problem_type,
            "complaint_media_list": [],
        });
        if let Some(a) = self.apply_refund_amount {
            v["apply_refund_amount"] = a.into();
        }
        v
    }

    fn date(&self) -> NaiveDate {
        beijing().timestamp_opt(self.at_secs, 0).single().map(|t| t.date_naive()).unwrap_or_default()
    }
}

fn poisoned(mock: &Mock) -> Response {
    mock.v3_error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "mock state poisoned")
}

/// `GET /v3/merchant-service/complaints-v2?limit&offset&begin_date&end_date&complainted_mchid`.
pub(crate) async fn list(State(mock): State<Mock>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = v3_request(&mock, &method, &uri, &headers, "") {
        return *r;
    }
    let bad = |message: &str| mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message);
    let query: std::collections::HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let number = |k: &str, default: u32| query.get(k).map_or(Ok(default), |v| v.parse::<u32>().map_err(|_| ()));
    let (Ok(limit), Ok(offset)) = (number("limit", 10), number("offset", 0)) else {
        return bad("limit and offset must be whole numbers");
    };
    if !(1..=50).contains(&limit) {
        return bad("limit 取值范围为 1 到 50");
    }
    let date = |k: &str| query.get(k).and_then(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok());
    let (Some(begin), Some(end)) = (date("begin_date"), date("end_date")) else {
        return bad("begin_date and end_date are required, as yyyy-MM-dd");
    };
    if end < begin || (end - begin).num_days() > 30 {
        return bad("查询开始日期和结束日期跨度不能超过30天");
    }
    if query.get("complainted_mchid").is_some_and(|m| *m != mock.config.mch_id) {
        return bad("complainted_mchid is not this merchant");
    }
    let Ok(book) = mock.book.lock() else { return poisoned(&mock) };
    let mut found: Vec<&Complaint> = book.complaints.values().filter(|c| (begin..=end).contains(&c.date())).collect();
    found.sort_by(|a, b| (a.at_secs, &a.complaint_id).cmp(&(b.at_secs, &b.complaint_id)));
    let total = found.len();
    let data: Vec<serde_json::Value> =
        found.into_iter().skip(offset as usize).take(limit as usize).map(Complaint::json).collect();
    drop(book);
    let answer = serde_json::json!({"data": data, "limit": limit, "offset": offset, "total_count": total});
    mock.v3_answer(StatusCode::OK, answer.to_string())
}

/// `GET /v3/merchant-service/complaints-v2/{complaint_id}`.
pub(crate) async fn detail(
    State(mock): State<Mock>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = v3_request(&mock, &method, &uri, &headers, "") {
        return *r;
    }
    let Ok(book) = mock.book.lock() else { return poisoned(&mock) };
    let found = book.complaints.get(&id).map(Complaint::json);
    drop(book);
    match found {
        Some(c) => mock.v3_answer(StatusCode::OK, c.to_string()),
        None => mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "投诉单不存在"),
    }
}

/// The body of a request on one complaint: signed, JSON, naming this merchant.
fn complaint_request(
    mock: &Mock,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &str,
) -> Result<serde_json::Value, Box<Response>> {
    let v = v3_request(mock, method, uri, headers, body)?;
    if v.get("complainted_mchid").and_then(|m| m.as_str()) != Some(mock.config.mch_id.as_str()) {
        let message = "complainted_mchid is required and must be this merchant";
        return Err(Box::new(mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)));
    }
    Ok(v)
}

/// `POST /v3/merchant-service/complaints-v2/{complaint_id}/response`.
pub(crate) async fn respond(
    State(mock): State<Mock>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let v = match complaint_request(&mock, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let content = v.get("response_content").and_then(|c| c.as_str()).unwrap_or_default().to_string();
    let chars = content.chars().count();
    if chars == 0 || chars > 200 {
        return mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "response_content 长度为 1 到 200 个字符");
    }
    if v.get("response_images").and_then(|i| i.as_array()).is_some_and(|i| i.len() > 4) {
        return mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "response_images 最多 4 张");
    }
    change(&mock, &id, |c| {
        c.responses.push(content);
        c.state = "PROCESSING";
    })
}

/// Changes a complaint not yet completed: 204, or WeChat Pay's refusal.
fn change(mock: &Mock, id: &str, f: impl FnOnce(&mut Complaint)) -> Response {
    let Ok(mut book) = mock.book.lock() else { return poisoned(mock) };
    let answer = match book.complaints.get_mut(id) {
        None => Err((StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "投诉单不存在")),
        Some(c) if c.state == "PROCESSED" => Err((StatusCode::BAD_REQUEST, "INVALID_REQUEST", "投诉单已处理完成")),
        Some(c) => {
            f(c);
            Ok(())
        }
    };
    drop(book);
    match answer {
        Ok(()) => mock.v3_answer(StatusCode::NO_CONTENT, String::new()),
        Err((status, code, message)) => mock.v3_error(status, code, message),
    }
}

/// `POST /v3/merchant-service/complaints-v2/{complaint_id}/complete`.
pub(crate) async fn complete(
    State(mock): State<Mock>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(r) = complaint_request(&mock, &method, &uri, &headers, &body) {
        return *r;
    }
    change(&mock, &id, |c| c.state = "PROCESSED")
}

/// `/v3/merchant-service/complaint-notifications`: the one URL complaint notices go to.
pub(crate) async fn notifications(
    State(mock): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let v = match v3_request(&mock, &method, &uri, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let url = v.get("url").and_then(|u| u.as_str()).unwrap_or_default().to_string();
    if matches!(method, Method::POST | Method::PUT) && !url.starts_with("https://") && !url.starts_with("http://") {
        return mock.v3_error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "url must be an http(s) URL");
    }
    let Ok(mut book) = mock.book.lock() else { return poisoned(&mock) };
    let set = book.complaint_url.clone();
    let answer = match (&method, set) {
        (&Method::GET, Some(u)) => Ok(Some(u)),
        (&Method::POST, Some(_)) => Err((StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", "通知地址已存在")),
        (&Method::POST, None) | (&Method::PUT, Some(_)) => {
            book.complaint_url = Some(url.clone());
            Ok(Some(url))
        }
        (&Method::DELETE, Some(_)) => {
            book.complaint_url = None;
            Ok(None)
        }
        _ => Err((StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "通知地址不存在")),
    };
    drop(book);
    match answer {
        Ok(Some(url)) => {
            mock.v3_answer(StatusCode::OK, serde_json::json!({"mchid": mock.config.mch_id, "url": url}).to_string())
        }
        Ok(None) => mock.v3_answer(StatusCode::NO_CONTENT, String::new()),
        Err((status, code, message)) => mock.v3_error(status, code, message),
    }
}

/// `POST /mock/complaints`: a payer complains about a debited order; the notice goes to the
/// merchant's complaint notification URL, if it set one.
pub(crate) async fn make(State(mock): State<Mock>, axum::Json(v): axum::Json<serde_json::Value>) -> Response {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
    let out_trade_no = text("out_trade_no");
    let problem_type = match text("problem_type").as_str() {
        "" => "OTHERS".to_string(),
        p @ ("REFUND" | "SERVICE_NOT_WORK" | "OTHERS") => p.to_string(),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("problem_type {other:?} is not REFUND, SERVICE_NOT_WORK or OTHERS"),
            )
                .into_response();
        }
    };
    mock.settle_due();
    let Ok(mut book) = mock.book.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let Some(order) = book.orders.get(&out_trade_no).filter(|o| o.trade_state == "SUCCESS").cloned() else {
        return (StatusCode::NOT_FOUND, format!("no debited order {out_trade_no:?}")).into_response();
    };
    let n = book.complaints.len();
    let complaint_id = format!("2002{:023}", roll(mock.config.seed, &format!("{out_trade_no}/{n}")) % 10u64.pow(19));
    let complaint = Complaint {
        complaint_id: complaint_id.clone(),
        at_secs: now_secs(),
        detail: text("complaint_detail"),
        problem_type,
        apply_refund_amount: v.get("apply_refund_amount").and_then(|a| a.as_i64()),
        out_trade_no,
        transaction_id: order.transaction_id.clone(),
        amount: order.total_fee,
        state: "PENDING",
        responses: Vec::new(),
    };
    book.complaints.insert(complaint_id.clone(), complaint);
    let url = book.complaint_url.clone();
    drop(book);
    if let Some(url) = url {
        let resource = serde_json::json!({"complaint_id": complaint_id, "action_type": "CREATE_COMPLAINT"});
        let nonce = format!("cp{:030}", roll(mock.config.seed, &complaint_id));
        let (headers, body) = v3_callback("COMPLAINT.CREATE", &resource, &mock.options.api_v3_key, now_secs(), &nonce);
        mock.post_v3_callback(url, headers, body);
    }
    axum::Json(serde_json::json!({"complaint_id": complaint_id})).into_response()
}

/// `GET /mock/complaints`: every complaint with its state and the merchant's responses.
pub(crate) async fn made(State(mock): State<Mock>) -> Response {
    let Ok(book) = mock.book.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let all: Vec<serde_json::Value> = book
        .complaints
        .values()
        .map(|c| {
            let mut v = c.json();
            v["responses"] = serde_json::json!(c.responses);
            v
        })
        .collect();
    let url = book.complaint_url.clone();
    drop(book);
    axum::Json(serde_json::json!({"complaints": all, "notification_url": url})).into_response()
}
