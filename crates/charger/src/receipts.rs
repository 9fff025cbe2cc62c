//! Electronic receipts: one per succeeded charge and per succeeded refund, numbered per
//! merchant in the order the log holds them, with what a tax receipt states (the merchant's
//! legal name and unified social credit code, the amount, the VAT rate and the VAT it
//! includes, the payer, the time). Served on the HTTP listener as HTML and as PDF:
//!
//! - `GET /receipts/{merchant_id}/{number}` and `…/pdf`, to the merchant with its API key
//!   (`Authorization: Bearer …`) or the operator key;
//! - the same with `?sig=…`, the payer's link (the signature is an HMAC of the merchant and
//!   the number under a key the charger makes once and keeps in its database).
//!
//! A receipt the caller may not see answers 404, as one that does not exist.
use crate::pdf;
use autodebit_domain::money::display as money;
use autodebit_domain::settlement::{vat_basis_points, vat_included};
use autodebit_eventstore::{EventStore, Tx, Value};
use autodebit_runtime::auth::Authenticator;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hmac::Mac;
use maud::{DOCTYPE, html};

/// Records the receipts of a run of successes, each row `[item_id, kind, charge_id,
/// merchant_id, payer_id, amount, currency, at_ms]`, numbered per merchant after the ones it
/// has, in the run's order; items with a receipt already are passed over.
pub async fn record_run(tx: &mut Tx, rows: Vec<serde_json::Value>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let json = tx.kind().json_rows(1);
    let ids = serde_json::Value::Array(rows.iter().map(|r| serde_json::json!([r[0]])).collect()).to_string();
    let have: std::collections::HashSet<String> = tx
        .query(
            &format!("SELECT item_id FROM receipts WHERE item_id IN (SELECT value->>0 FROM {json})"),
            &[Value::from(ids)],
        )
        .await?
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect();
    let fresh: Vec<&serde_json::Value> =
        rows.iter().filter(|r| !have.contains(r[0].as_str().unwrap_or_default())).collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let mut merchants: Vec<&str> = fresh.iter().filter_map(|r| r[3].as_str()).collect();
    merchants.sort_unstable();
    merchants.dedup();
    let list = serde_json::Value::Array(merchants.iter().map(|m| serde_json::json!([m])).collect()).to_string();
    let known = tx
        .query(
            &format!(
                "SELECT value->>0, COALESCE((SELECT MAX(number) FROM receipts r WHERE r.merchant_id = value->>0), 0),
                        COALESCE((SELECT industry FROM settlement_merchants m WHERE m.merchant_id = value->>0), '')
                 FROM {json}"
            ),
            &[Value::from(list)],
        )
        .await?;
    let mut next: std::collections::HashMap<String, (i64, u32)> = known
        .iter()
        .map(|r| {
            let industry = r.text(2).unwrap_or_default();
            (r.text(0).unwrap_or_default().to_string(), (r.i64(1).unwrap_or(0), vat_basis_points(industry)))
        })
        .collect();
    let numbered: Vec<serde_json::Value> = fresh
        .into_iter()
        .map(|r| {
            let entry = next.entry(r[3].as_str().unwrap_or_default().to_string()).or_insert((0, 600));
            entry.0 += 1;
            let amount = r[5].as_i64().unwrap_or(0);
            serde_json::json!([
                r[0],
                entry.0,
                r[1],
                r[2],
                r[3],
                r[4],
                amount,
                r[6],
                entry.1,
                vat_included(amount, entry.1),
                r[7]
            ])
        })
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO receipts (item_id, number, kind, charge_id, merchant_id, payer_id, amount, currency,
                 tax_basis_points, tax, at_ms)
             SELECT value->>0, CAST(value->>1 AS BIGINT), value->>2, value->>3, value->>4, value->>5,
                    CAST(value->>6 AS BIGINT), value->>7, CAST(value->>8 AS BIGINT), CAST(value->>9 AS BIGINT),
                    CAST(value->>10 AS BIGINT)
             FROM {json} WHERE true ON CONFLICT (item_id) DO NOTHING"
        ),
        &[Value::from(serde_json::Value::Array(numbered).to_string())],
    )
    .await?;
    Ok(())
}

/// The key payers' links are signed with, made on first use and kept.
pub async fn link_key(store: &EventStore) -> anyhow::Result<String> {
    autodebit_runtime::links::kept_key(store, "charger_keys", "receipts").await
}

/// The signature of a payer's link to a receipt.
pub fn signature(key: &str, merchant: &str, number: i64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("receipt\n{merchant}\n{number}").as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// A receipt as shown.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub merchant_id: String,
    pub number: i64,
    pub item_id: String,
    pub kind: String,
    pub charge_id: String,
    pub payer_id: String,
    pub amount: i64,
    pub currency: String,
    pub tax_basis_points: i64,
    pub tax: i64,
    pub at_ms: i64,
    pub legal_name: String,
    pub credit_code: String,
}

const COLUMNS: &str = "r.merchant_id, r.number, r.item_id, r.kind, r.charge_id, r.payer_id, r.amount, r.currency, \
                       r.tax_basis_points, r.tax, r.at_ms, COALESCE(m.legal_name, ''), COALESCE(m.credit_code, '')";

fn from_row(r: &autodebit_eventstore::Row) -> Receipt {
    let text = |i| r.text(i).unwrap_or_default().to_string();
    let int = |i| r.i64(i).unwrap_or(0);
    Receipt {
        merchant_id: text(0),
        number: int(1),
        item_id: text(2),
        kind: text(3),
        charge_id: text(4),
        payer_id: text(5),
        amount: int(6),
        currency: text(7),
        tax_basis_points: int(8),
        tax: int(9),
        at_ms: int(10),
        legal_name: text(11),
        credit_code: text(12),
    }
}

pub async fn one(store: &EventStore, merchant: &str, number: i64) -> anyhow::Result<Option<Receipt>> {
    let rows = store
        .query(
            &format!(
                "SELECT {COLUMNS} FROM receipts r LEFT JOIN settlement_merchants m ON m.merchant_id = r.merchant_id
                 WHERE r.merchant_id = $1 AND r.number = $2"
            ),
            &[Value::from(merchant), Value::Int(number)],
        )
        .await?;
    Ok(rows.first().map(from_row))
}

/// The receipts of a charge: its own and its refunds'.
pub async fn of_charge(store: &EventStore, charge_id: &str) -> anyhow::Result<Vec<Receipt>> {
    let rows = store
        .query(
            &format!(
                "SELECT {COLUMNS} FROM receipts r LEFT JOIN settlement_merchants m ON m.merchant_id = r.merchant_id
                 WHERE r.charge_id = $1 ORDER BY r.number"
            ),
            &[Value::from(charge_id)],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

// === the pages ===

#[derive(Clone)]
pub struct Pages {
    pub store: EventStore,
    pub auth: Authenticator,
    pub key: String,
}

pub fn routes(pages: Pages) -> axum::Router {
    axum::Router::new()
        .route("/receipts/{merchant_id}/{number}", get(html_page))
        .route("/receipts/{merchant_id}/{number}/pdf", get(pdf_file))
        .with_state(pages)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such receipt\n").into_response()
}

/// The receipt, if the caller may see it: by the payer's signature or a key of its merchant
/// (or the operator's). Checked before the receipt is read.
async fn authorised(
    p: &Pages,
    headers: &HeaderMap,
    query: Option<&str>,
    merchant: &str,
    number: &str,
) -> Result<Receipt, Response> {
    let number: i64 = number.parse().map_err(|_| not_found())?;
    let sig = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sig=")));
    let allowed = match sig {
        Some(sig) => {
            use subtle::ConstantTimeEq;
            bool::from(signature(&p.key, merchant, number).as_bytes().ct_eq(sig.as_bytes()))
        }
        None => match p.auth.principal(headers).await {
            Ok(who) => autodebit_domain::MerchantId::parse(merchant).is_ok_and(|m| who.may_see(&m)),
            Err(e) => {
                let mut r = (StatusCode::UNAUTHORIZED, format!("{}\n", e.message())).into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Err(r);
            }
        },
    };
    if !allowed {
        return Err(not_found());
    }
    match one(&p.store, merchant, number).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found()),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "reading a receipt");
            Err((StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response())
        }
    }
}

/// The receipt's fields as (label, value) lines, in Chinese with the English beside.
fn fields(r: &Receipt) -> Vec<(&'static str, String)> {
    let refund = r.kind == "refund";
    let time = autodebit_domain::clock::from_millis(r.at_ms)
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    vec![
        ("收据编号 Receipt number", format!("{:010}", r.number)),
        ("类型 Kind", if refund { "退款 Refund".into() } else { "扣款 Charge".into() }),
        ("商户名称 Merchant", r.legal_name.clone()),
        ("统一社会信用代码 Credit code", r.credit_code.clone()),
        ("金额 Amount", money(if refund { -r.amount } else { r.amount }, &r.currency)),
        ("税率 VAT rate", format!("{}.{:02}%", r.tax_basis_points / 100, r.tax_basis_points % 100)),
        ("税额 VAT included", money(if refund { -r.tax } else { r.tax }, &r.currency)),
        ("付款人 Payer", r.payer_id.clone()),
        ("交易号 Transaction", r.item_id.clone()),
        ("时间 Time (Beijing)", time),
    ]
}

const TITLE: &str = "电子收据 Electronic receipt";

async fn html_page(
    State(p): State<Pages>,
    Path((merchant, number)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let r = match authorised(&p, &headers, query.as_deref(), &merchant, &number).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let pdf_link = match &query {
        Some(q) => format!("/receipts/{}/{}/pdf?{q}", r.merchant_id, r.number),
        None => format!("/receipts/{}/{}/pdf", r.merchant_id, r.number),
    };
    let page = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head { meta charset="utf-8"; title { (TITLE) } }
            body style="font-family: sans-serif; max-width: 640px; margin: 24px auto;" {
                h1 { (TITLE) }
                table id="receipt" {
                    @for (label, value) in fields(&r) {
                        tr { th style="text-align:left; padding-right:16px;" { (label) } td { (value) } }
                    }
                }
                p { a id="pdf" href=(pdf_link) { "PDF" } }
            }
        }
    };
    let mut resp = Html(page.into_string()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    resp
}

async fn pdf_file(
    State(p): State<Pages>,
    Path((merchant, number)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let r = match authorised(&p, &headers, query.as_deref(), &merchant, &number).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut lines = vec![pdf::Text { x: 50, y: 780, size: 20, text: TITLE.into() }];
    for (i, (label, value)) in fields(&r).into_iter().enumerate() {
        let y = 730 - 28 * i as u32;
        lines.push(pdf::Text { x: 50, y, size: 11, text: label.into() });
        lines.push(pdf::Text { x: 260, y, size: 11, text: value });
    }
    let bytes = pdf::page(TITLE, &lines);
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"receipt-{:010}.pdf\"", r.number)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}
