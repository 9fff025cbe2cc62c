//! WeChat Pay's callbacks, on the charger's HTTP listener:
//!
//! - `POST /callbacks/wechatpay/v2/deduction` — a deduction's result (v2 XML);
//! - `POST /callbacks/wechatpay/v2/contract` — a contract signed or deleted at WeChat Pay.
//!
//! Each is checked before it may change anything: well-formed XML (400), a merchant account
//! the platform holds (404), a valid signature with that account's key (401), an order or
//! contract the platform knows (404). What passes is recorded once: a deduction result goes
//! the same way as a query's answer (`attempts::record`, at the version the attempt left the
//! charge stream), so whichever arrives first decides and the other changes nothing; a result
//! delivered again is acknowledged and ignored. Every callback is counted in
//! `autodebit_callbacks_total{kind, result}`.
use crate::attempts::{self, Resolution};
use autodebit_domain::{ChargeId, ContractId};
use autodebit_eventstore::Value;
use autodebit_provider::Lookup;
use autodebit_provider::wechatpay::WeChatPay;
use autodebit_provider::wechatpay::client::{CALLBACK_ACK, order_state};
use autodebit_provider::wechatpay::v2::{self, Params};
use autodebit_runtime::Platform;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::collections::HashMap;
use std::sync::Arc;

/// The WeChat Pay accounts the platform holds, by `mch_id`: whose they are and their keys.
#[derive(Default)]
pub struct Accounts {
    by_mch_id: HashMap<String, (String, Arc<WeChatPay>)>,
}

impl Accounts {
    pub fn new(merchants: &[(String, Arc<WeChatPay>)]) -> Self {
        let by_mch_id = merchants.iter().map(|(m, w)| (w.config().mch_id.clone(), (m.clone(), w.clone()))).collect();
        Accounts { by_mch_id }
    }
}

#[derive(Clone)]
struct Callbacks {
    platform: Platform,
    accounts: Arc<Accounts>,
}

pub fn routes(platform: Platform, accounts: Arc<Accounts>) -> Router {
    Router::new()
        .route("/callbacks/wechatpay/v2/deduction", post(deduction))
        .route("/callbacks/wechatpay/v2/contract", post(contract))
        .with_state(Callbacks { platform, accounts })
}

/// A refusal: its status, the reason counted, and what the body says.
struct Refused(StatusCode, &'static str, String);

fn answer(kind: &'static str, result: Result<&'static str, Refused>) -> Response {
    let (status, counted, body) = match result {
        Ok(counted) => (StatusCode::OK, counted, CALLBACK_ACK.to_string()),
        Err(Refused(status, reason, message)) => {
            tracing::warn!(kind, reason, message, "WeChat Pay callback refused");
            let mut p = Params::new();
            p.insert("return_code".into(), "FAIL".into());
            p.insert("return_msg".into(), message);
            (status, reason, v2::to_xml(&p))
        }
    };
    autodebit_runtime::metrics::add("autodebit_callbacks_total", &[("kind", kind), ("result", counted)], 1);
    (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// Reads and checks a v2 callback: its XML, its account, its signature.
fn verified(accounts: &Accounts, body: &str) -> Result<(Params, String), Refused> {
    let p = v2::from_xml(body).map_err(|e| Refused(StatusCode::BAD_REQUEST, "malformed", e.to_string()))?;
    let mch_id = p.get("mch_id").map(String::as_str).unwrap_or_default();
    let (merchant, account) = accounts
        .by_mch_id
        .get(mch_id)
        .ok_or_else(|| Refused(StatusCode::NOT_FOUND, "unknown_merchant", format!("mch_id {mch_id:?} is not ours")))?;
    v2::verify(&p, &account.config().api_v2_key)
        .map_err(|e| Refused(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()))?;
    Ok((p, merchant.clone()))
}

fn internal(e: anyhow::Error) -> Refused {
    Refused(StatusCode::INTERNAL_SERVER_ERROR, "error", format!("{e:#}"))
}

async fn deduction(State(cb): State<Callbacks>, body: String) -> Response {
    answer("deduction", on_deduction(&cb, &body).await)
}

async fn on_deduction(cb: &Callbacks, body: &str) -> Result<&'static str, Refused> {
    let (p, merchant) = verified(&cb.accounts, body)?;
    let out_trade_no = p.get("out_trade_no").cloned().unwrap_or_default();
    let unknown =
        || Refused(StatusCode::NOT_FOUND, "unknown_order", format!("out_trade_no {out_trade_no:?} is not ours"));
    let Some(row) = attempts::find(&cb.platform.store, &out_trade_no).await.map_err(internal)? else {
        // Not waiting: delivered again after its outcome was recorded, or never ours.
        let (charge, attempt) = ChargeId::from_out_trade_no(&out_trade_no).ok_or_else(unknown)?;
        let known = cb
            .platform
            .store
            .query(
                "SELECT 1 FROM events WHERE stream = $1 AND event_type = 'ChargeAttemptStarted' LIMIT 1",
                &[Value::from(charge.stream())],
            )
            .await
            .map_err(|e| internal(e.into()))?;
        return if known.is_empty() || attempt == 0 { Err(unknown()) } else { Ok("redelivered") };
    };
    if row.charge.merchant_id.as_str() != merchant {
        return Err(unknown());
    }
    let fee = p.get("total_fee").and_then(|f| f.parse::<i64>().ok());
    if fee.is_some_and(|f| f != row.charge.amount.minor_units()) {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "amount_mismatch",
            format!("total_fee {:?} is not the attempt's {}", fee, row.charge.amount.minor_units()),
        ));
    }
    match order_state(&p, "deduction callback") {
        Lookup::Ended(outcome) => {
            attempts::record(&cb.platform, &[Resolution::Ended(row, outcome)]).await.map_err(internal)?;
            Ok("recorded")
        }
        // Nothing decided yet: the attempts worker keeps asking.
        Lookup::Pending { .. } | Lookup::NotFound => Ok("pending"),
    }
}

async fn contract(State(cb): State<Callbacks>, body: String) -> Response {
    answer("contract", on_contract(&cb, &body).await)
}

/// A signing (`change_type` ADD) or deletion (DELETE) at WeChat Pay of a contract whose
/// `contract_code` is the platform's contract id: remembered, so deductions name WeChat Pay's
/// `contract_id`. Delivered again, it changes nothing.
async fn on_contract(cb: &Callbacks, body: &str) -> Result<&'static str, Refused> {
    let (p, merchant) = verified(&cb.accounts, body)?;
    let field = |name: &str| p.get(name).cloned().unwrap_or_default();
    let code = field("contract_code");
    let unknown = || Refused(StatusCode::NOT_FOUND, "unknown_contract", format!("contract_code {code:?} is not ours"));
    let contract = ContractId::parse(&code).map_err(|_| unknown())?;
    let signed = cb
        .platform
        .store
        .query(
            "SELECT 1 FROM events WHERE stream = $1 AND event_type = 'ContractSigned' LIMIT 1",
            &[Value::from(contract.stream())],
        )
        .await
        .map_err(|e| internal(e.into()))?;
    if signed.is_empty() {
        return Err(unknown());
    }
    let state = match field("change_type").as_str() {
        "ADD" => "signed",
        "DELETE" => "deleted",
        other => {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("change_type {other:?} is neither ADD nor DELETE"),
            ));
        }
    };
    let provider_contract_id = field("contract_id");
    if provider_contract_id.is_empty() {
        return Err(Refused(StatusCode::BAD_REQUEST, "malformed", "contract_id is missing".into()));
    }
    let mut tx = cb.platform.store.begin().await.map_err(|e| internal(e.into()))?;
    tx.execute(
        "INSERT INTO charger_provider_contracts (contract_id, merchant_id, provider_contract_id, state, changed_at_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (contract_id) DO UPDATE SET provider_contract_id = excluded.provider_contract_id,
           state = excluded.state, changed_at_ms = excluded.changed_at_ms",
        &[
            Value::from(contract.to_string()),
            Value::from(merchant),
            Value::from(provider_contract_id),
            Value::from(state),
            Value::Int(cb.platform.clock.now_ms()),
        ],
    )
    .await
    .map_err(|e| internal(e.into()))?;
    tx.commit().await.map_err(|e| internal(e.into()))?;
    if state == "deleted" {
        tracing::warn!(contract = %contract, "WeChat Pay reports the contract deleted; its deductions will be declined");
    }
    Ok(state)
}
