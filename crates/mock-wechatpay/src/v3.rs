//! The v3 endpoints the platform uses: JSON, each request's `Authorization` verified against the
//! merchant's public key, each answer signed with the platform key — the pre-deduction notice
//! (`notify`, `fail-notify`) and refunds — and v3 callbacks as WeChat Pay sends them.
use crate::state::{Book, Contract, Mock, Refund, beijing_time, now_secs, roll};
use crate::{PLATFORM_KEY_ID, PLATFORM_PRIVATE_KEY_PEM};
use autodebit_provider::wechatpay::v3;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rsa::pkcs1v15::Signature;
use rsa::signature::Verifier;
use std::collections::HashMap;
/// `message` signed with the mock's platform key, as WeChat Pay signs answers and callbacks.
pub fn sign_as_platform(message: &str) -> String {
    v3::MerchantSigner::from_pem("wechatpay", PLATFORM_KEY_ID, PLATFORM_PRIVATE_KEY_PEM)
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
    let ciphertext =
        v3::encrypt_resource(api_v3_key, &resource_nonce, "transaction", &resource.to_string()).unwrap_or_default();
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
    let signature = sign_as_platform(&v3::response_message(timestamp, nonce, &body));
    let headers = vec![
        ("Wechatpay-Serial", PLATFORM_KEY_ID.to_string()),
        ("Wechatpay-Timestamp", timestamp.to_string()),
        ("Wechatpay-Nonce", nonce.to_string()),
        ("Wechatpay-Signature", signature),
    ];
    (headers, body)
}

impl Mock {
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
    pub(crate) fn v3_answer(&self, status: StatusCode, body: String) -> Response {
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

    pub(crate) fn v3_error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.v3_answer(status, serde_json::json!({"code": code, "message": message}).to_string())
    }
}

/// The JSON body of a v3 request once its signature, merchant and app hold.
pub(crate) fn v3_request(
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
    if body.is_empty() && method == Method::GET {
        return Ok(serde_json::Value::Null);
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
pub(crate) async fn notify(
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
pub(crate) async fn fail_notify(
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
pub(crate) async fn refund(
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
                Refund {
                    refund_id: refund_id.clone(),
                    out_trade_no: out_trade_no.clone(),
                    amount,
                    at_secs: crate::state::now_secs(),
                },
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

/// Receivers of one profit-sharing order at most, and the share of an order that may be shared
/// (WeChat Pay's default maximum ratio, 30%).
const MAX_RECEIVERS: usize = 50;
const MAX_SHARE_PERCENT: i64 = 30;

fn share_json(out_order_no: &str, s: &crate::state::Share) -> serde_json::Value {
    let at = beijing_time(s.at_secs);
    let when =
        format!("{}-{}-{}T{}:{}:{}+08:00", &at[0..4], &at[4..6], &at[6..8], &at[8..10], &at[10..12], &at[12..14]);
    let receivers: Vec<serde_json::Value> = s
        .receivers
        .iter()
        .enumerate()
        .map(|(i, (kind, account, amount, description))| {
            serde_json::json!({"amount": amount, "description": description, "type": kind, "account": account,
                               "result": "SUCCESS", "fail_reason": "", "detail_id": format!("{}{i:02}", s.order_id),
                               "create_time": when, "finish_time": when})
        })
        .collect();
    serde_json::json!({"transaction_id": s.transaction_id, "out_order_no": out_order_no, "order_id": s.order_id,
                       "state": "FINISHED", "receivers": receivers})
}

/// `POST /v3/profitsharing/orders`: shares a debited order made with `profit_sharing=Y` among
/// at most 50 receivers, at most 30% of it in all, each receiver paid at once (`FINISHED`). The
/// same `out_order_no` with the same receivers answers the order made before.
pub(crate) async fn profitsharing(
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
    let bad = |code: &str, message: &str| mock.v3_error(StatusCode::BAD_REQUEST, code, message);
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    if text("appid") != mock.config.appid {
        return bad("PARAM_ERROR", "appid does not match");
    }
    let (transaction_id, out_order_no) = (text("transaction_id"), text("out_order_no"));
    if transaction_id.is_empty() || out_order_no.is_empty() || out_order_no.len() > 64 {
        return bad("PARAM_ERROR", "transaction_id and out_order_no (at most 64 characters) are required");
    }
    if !v.get("unfreeze_unsplit").is_some_and(serde_json::Value::is_boolean) {
        return bad("PARAM_ERROR", "unfreeze_unsplit is required");
    }
    let Some(list) = v.get("receivers").and_then(|r| r.as_array()).filter(|r| !r.is_empty()) else {
        return bad("PARAM_ERROR", "receivers is required");
    };
    if list.len() > MAX_RECEIVERS {
        return bad("PARAM_ERROR", "分账接收方超出上限");
    }
    let mut receivers = Vec::new();
    for r in list {
        let field = |k: &str| r.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let (kind, account, description) = (field("type"), field("account"), field("description"));
        let amount = r.get("amount").and_then(|a| a.as_i64()).filter(|a| *a > 0);
        match (kind.as_str(), amount) {
            ("MERCHANT_ID" | "PERSONAL_OPENID", Some(amount)) if !account.is_empty() && !description.is_empty() => {
                receivers.push((kind, account, amount, description));
            }
            _ => return bad("PARAM_ERROR", "each receiver needs type, account, a positive amount and description"),
        }
    }
    mock.settle_due();
    let Ok(mut book) = mock.book.lock() else {
        return mock.v3_error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "mock state poisoned");
    };
    if let Some(earlier) = book.shares.get(&out_order_no) {
        if earlier.transaction_id == transaction_id && earlier.receivers == receivers {
            let answer = share_json(&out_order_no, earlier);
            drop(book);
            return mock.v3_answer(StatusCode::OK, answer.to_string());
        }
        drop(book);
        return bad("INVALID_REQUEST", "商户分账单号重复");
    }
    let Some(no) = book.orders.iter().find(|(_, o)| o.transaction_id == transaction_id).map(|(no, _)| no.clone())
    else {
        drop(book);
        return mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
    };
    let order = book.orders[&no].clone();
    let total: i64 = receivers.iter().map(|r| r.2).sum();
    let refused = if order.trade_state != "SUCCESS" {
        Some(("INVALID_REQUEST", "订单未支付"))
    } else if !order.profit_sharing {
        Some(("INVALID_REQUEST", "非分账订单不支持分账"))
    } else if (order.shared_fen + total) * 100 > order.total_fee * MAX_SHARE_PERCENT {
        Some(("INVALID_REQUEST", "分账金额超出最大分账比例"))
    } else if order.shared_fen + total > order.total_fee - order.refunded_fen {
        Some(("NOT_ENOUGH", "分账金额不足"))
    } else {
        None
    };
    if let Some((code, message)) = refused {
        drop(book);
        return bad(code, message);
    }
    let share = crate::state::Share {
        transaction_id,
        order_id: format!("3008{:024}", u128::from(roll(mock.config.seed, &out_order_no)) % 10u128.pow(24)),
        receivers,
        at_secs: now_secs(),
    };
    let answer = share_json(&out_order_no, &share);
    book.shares.insert(out_order_no, share);
    if let Some(o) = book.orders.get_mut(&no) {
        o.shared_fen += total;
    }
    drop(book);
    mock.v3_answer(StatusCode::OK, answer.to_string())
}

/// `GET /v3/profitsharing/orders/{out_order_no}?transaction_id=…`: an order made before.
pub(crate) async fn profitsharing_query(
    State(mock): State<Mock>,
    Path(out_order_no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(r) = v3_request(&mock, &method, &uri, &headers, &body) {
        return *r;
    }
    let Ok(book) = mock.book.lock() else {
        return mock.v3_error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "mock state poisoned");
    };
    let found = book.shares.get(&out_order_no).map(|s| share_json(&out_order_no, s));
    drop(book);
    match found {
        Some(answer) => mock.v3_answer(StatusCode::OK, answer.to_string()),
        None => mock.v3_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "记录不存在"),
    }
}
