//! WeChat Pay's deduction results, on the charger's HTTP listener (its signing and deletion
//! notices go to the contracts service, which owns contracts):
//!
//! - `POST /callbacks/wechatpay/v2/deduction` — a deduction's result (v2 XML);
//! - `POST /callbacks/wechatpay/v3/{mch_id}` — v3 notices (JSON, signed in `Wechatpay-*`
//!   headers, resource encrypted with the APIv3 key): deduction results, refund results and
//!   payers' complaints (`provider_complaints`).
//!
//! Each is checked before it may change anything: well-formed XML or JSON (400), a merchant
//! account the platform holds (404), a valid signature with that account's key and, for v3,
//! a timestamp within five minutes (401) and a nonce not seen before (409), an order the
//! platform knows (404). What passes is recorded once: a deduction result goes
//! the same way as a query's answer (`app::record_deduction`, at the version the attempt left
//! the charge stream), so whichever arrives first decides and the other changes nothing; a
//! result delivered again is acknowledged and ignored. Every callback is counted in
//! `autodebit_callbacks_total{kind, result}`.
//!
//! The handlers check and read what WeChat Pay sent, and leave the rest to `app`.
use crate::app::{self, Deduction, DeductionError, RefundNotice, RefundNoticeError};
use autodebit_provider::wechatpay::client::order_state;
use autodebit_provider::wechatpay::v2::Params;
use autodebit_provider::wechatpay::{Accounts, Refused, v2_reply};
use autodebit_runtime::Platform;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::sync::Arc;

#[derive(Clone)]
struct Callbacks {
    platform: Platform,
    accounts: Arc<Accounts>,
}

pub fn routes(platform: Platform, accounts: Arc<Accounts>) -> Router {
    Router::new()
        .route("/callbacks/wechatpay/v2/deduction", post(deduction))
        .route("/callbacks/wechatpay/v3/{mch_id}", post(v3_notice))
        .with_state(Callbacks { platform, accounts })
}

/// Counts a v2 callback's result and answers it.
fn answer(kind: &'static str, result: Result<&'static str, Refused>) -> Response {
    let (counted, response) = v2_reply(kind, result);
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CALLBACKS, &[("kind", kind), ("result", counted)], 1);
    response
}

fn internal(e: anyhow::Error) -> Refused {
    Refused::internal(format!("{e:#}"))
}

async fn deduction(State(cb): State<Callbacks>, body: String) -> Response {
    answer("deduction", on_deduction(&cb, &body).await)
}

async fn on_deduction(cb: &Callbacks, body: &str) -> Result<&'static str, Refused> {
    let (p, merchant) = cb.accounts.verify_deduction(body)?;
    on_order(cb, &p, &merchant).await
}

/// A deduction's result, from a v2 callback or a v3 notice's resource, for `merchant`.
async fn on_order(cb: &Callbacks, p: &Params, merchant: &str) -> Result<&'static str, Refused> {
    let out_trade_no = p.get("out_trade_no").cloned().unwrap_or_default();
    let fee = p.get("total_fee").and_then(|f| f.parse::<i64>().ok());
    let state = order_state(p, "deduction callback");
    match app::record_deduction(&cb.platform, merchant, &out_trade_no, fee, state).await {
        Ok(Deduction::Recorded) => Ok("recorded"),
        // Nothing decided yet: the attempts worker keeps asking.
        Ok(Deduction::Pending) => Ok("pending"),
        Ok(Deduction::Redelivered) => Ok("redelivered"),
        Err(DeductionError::UnknownOrder) => {
            Err(Refused(StatusCode::NOT_FOUND, "unknown_order", format!("out_trade_no {out_trade_no:?} is not ours")))
        }
        Err(e @ DeductionError::AmountMismatch { .. }) => {
            Err(Refused(StatusCode::BAD_REQUEST, "amount_mismatch", e.to_string()))
        }
        Err(DeductionError::Store(e)) => Err(internal(e)),
    }
}

async fn v3_notice(
    State(cb): State<Callbacks>,
    axum::extract::Path(mch_id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    let result = on_v3(&cb, &mch_id, &headers, &body).await;
    let (status, counted, body) = match result {
        Ok(counted) => (StatusCode::OK, counted, serde_json::json!({"code": "SUCCESS", "message": "OK"})),
        Err(Refused(status, reason, message)) => {
            tracing::warn!(kind = "v3", reason, message, "WeChat Pay v3 callback refused");
            (status, reason, serde_json::json!({"code": "FAIL", "message": message}))
        }
    };
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CALLBACKS, &[("kind", "v3"), ("result", counted)], 1);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn on_v3(
    cb: &Callbacks,
    mch_id: &str,
    headers: &axum::http::HeaderMap,
    body: &str,
) -> Result<&'static str, Refused> {
    use autodebit_provider::wechatpay::client::CallbackError;
    let (merchant, account) = cb
        .accounts
        .by_mch_id(mch_id)
        .ok_or_else(|| Refused(StatusCode::NOT_FOUND, "unknown_merchant", format!("mch_id {mch_id:?} is not ours")))?;
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let nonce = h("Wechatpay-Nonce");
    let (notice, resource) = account
        .open_callback(h("Wechatpay-Serial"), h("Wechatpay-Timestamp"), nonce, h("Wechatpay-Signature"), body)
        .map_err(|e| match e {
            CallbackError::Malformed(m) => Refused(StatusCode::BAD_REQUEST, "malformed", m),
            CallbackError::Undecryptable(m) => Refused(StatusCode::BAD_REQUEST, "undecryptable", m),
            CallbackError::Signature(e @ autodebit_provider::wechatpay::v3::Error::Skew { .. }) => {
                Refused(StatusCode::UNAUTHORIZED, "stale_timestamp", e.to_string())
            }
            CallbackError::Signature(e) => Refused(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()),
            CallbackError::NoV3 => Refused(StatusCode::NOT_FOUND, "unknown_merchant", e.to_string()),
        })?;
    remember_nonce(cb, nonce).await?;
    let r: serde_json::Value = serde_json::from_str(&resource)
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, "malformed", format!("resource: {e}")))?;
    let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if notice.event_type.starts_with("REFUND.") {
        return on_refund(cb, &r, merchant).await;
    }
    if notice.event_type.starts_with("COMPLAINT.") {
        return on_complaint(cb, &text("complaint_id"), merchant, account).await;
    }
    if !notice.event_type.starts_with("TRANSACTION.") {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "unsupported",
            format!("event_type {:?} is not a deduction result", notice.event_type),
        ));
    }
    if text("mchid") != mch_id && !text("mchid").is_empty() {
        return Err(Refused(StatusCode::BAD_REQUEST, "malformed", "the resource names another mchid".into()));
    }
    // The same fields as a v2 result, for one reading of both.
    let mut p = Params::new();
    for k in ["out_trade_no", "transaction_id", "trade_state", "trade_state_desc"] {
        p.insert(k.into(), text(k));
    }
    if let Some(total) = r.pointer("/amount/total").and_then(|v| v.as_i64()) {
        p.insert("total_fee".into(), total.to_string());
    }
    on_order(cb, &p, merchant).await
}

/// A complaint made at WeChat Pay (`COMPLAINT.CREATE`, `.STATE_CHANGE`): filed once, its
/// detail read from WeChat Pay (`provider_complaints`).
async fn on_complaint(
    cb: &Callbacks,
    complaint_id: &str,
    merchant: &str,
    account: &autodebit_provider::wechatpay::WeChatPay,
) -> Result<&'static str, Refused> {
    use crate::provider_complaints::{ReceiveError, Received, receive};
    if complaint_id.is_empty() {
        return Err(Refused(StatusCode::BAD_REQUEST, "malformed", "the resource names no complaint_id".into()));
    }
    let complaints = crate::complaints::Complaints::new(cb.platform.clone());
    match receive(&complaints, &cb.platform, merchant, account, complaint_id).await {
        Ok(Received::Filed) => Ok("complaint_filed"),
        Ok(Received::Known) => Ok("complaint_known"),
        Err(e @ ReceiveError::UnknownOrder { .. }) => {
            Err(Refused(StatusCode::NOT_FOUND, "unknown_order", e.to_string()))
        }
        // WeChat Pay itself does not know it.
        Err(e @ ReceiveError::Provider(autodebit_provider::ProviderError::Refused { .. })) => {
            Err(Refused(StatusCode::NOT_FOUND, "unknown_complaint", e.to_string()))
        }
        Err(e) => Err(internal(e.into())),
    }
}

/// Takes `nonce` as used; a nonce used before is a replay.
async fn remember_nonce(cb: &Callbacks, nonce: &str) -> Result<(), Refused> {
    let fresh = app::fresh_nonce(&cb.platform, nonce).await.map_err(|e| internal(e.into()))?;
    if !fresh {
        return Err(Refused(StatusCode::CONFLICT, "replayed", format!("Wechatpay-Nonce {nonce:?} was used before")));
    }
    Ok(())
}

/// A refund's result (`REFUND.SUCCESS`, `.ABNORMAL`, `.CLOSED`): recorded like the refund
/// call's own answer, once.
async fn on_refund(cb: &Callbacks, r: &serde_json::Value, merchant: &str) -> Result<&'static str, Refused> {
    use autodebit_provider::RefundOutcome;
    let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let refund_id = text("out_refund_no");
    let outcome = match text("refund_status").as_str() {
        "SUCCESS" => RefundOutcome::Succeeded { refund_id: text("refund_id") },
        "CLOSED" => RefundOutcome::Failed { code: "CLOSED".into(), message: "WeChat Pay closed the refund".into() },
        "ABNORMAL" => RefundOutcome::Failed {
            code: "ABNORMAL".into(),
            message: "the refund could not reach the payer; handle it in the merchant platform".into(),
        },
        other => RefundOutcome::Unknown { reason: format!("refund_status {other:?}") },
    };
    match app::record_refund_notice(&cb.platform, merchant, &refund_id, outcome).await {
        Ok(RefundNotice::Recorded) => Ok("refund_recorded"),
        Ok(RefundNotice::Pending) => Ok("pending"),
        Err(RefundNoticeError::UnknownRefund) => {
            Err(Refused(StatusCode::NOT_FOUND, "unknown_refund", format!("out_refund_no {refund_id:?} is not ours")))
        }
        Err(RefundNoticeError::Store(e)) => Err(internal(e)),
    }
}
