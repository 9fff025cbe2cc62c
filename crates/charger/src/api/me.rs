//! The charger's part of the payer's page (the page is the scheduler's; see its `api::me`):
//! - `POST /me/<merchant>/<payer>/charges/<charge_id>/complaint?sig=…`: the payer complains
//!   about one of their charges that took money (form fields `kind` and `description`);
//! - `GET /me/<merchant>/<payer>/receipts/<item_id>?sig=…`: the receipt of one of their
//!   charges or refunds, by a redirect to the receipt's own signed link.
//!
//! The page's signature is checked before anything else; a charge or receipt that is not this
//! payer's at this merchant answers 404, as one that does not exist.
use crate::complaints::{Complaints, Error};
use autodebit_domain::complaint::{Kind, MAX_TEXT_CHARS, Source};
use autodebit_domain::{ChargeId, MerchantId};
use autodebit_eventstore::{EventStore, Value};
use autodebit_runtime::auth::Principal;
use autodebit_runtime::links::{PayerLinks, encode};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::HashMap;

#[derive(Clone)]
pub struct MeState {
    pub complaints: Complaints,
    pub store: EventStore,
    pub links: PayerLinks,
    /// The key receipts' own links are signed with (`receipts::link_key`).
    pub receipt_key: String,
}

pub fn routes(state: MeState) -> axum::Router {
    axum::Router::new()
        .route("/me/{merchant}/{payer}/charges/{charge_id}/complaint", post(complain))
        .route("/me/{merchant}/{payer}/receipts/{item_id}", get(receipt))
        .with_state(state)
}

fn page(status: StatusCode, text: &str) -> Response {
    let body = maud::html! { (maud::DOCTYPE) title { (status.as_u16()) } p id="error" { (text) } };
    (status, Html(body.into_string())).into_response()
}

fn missing() -> Response {
    page(StatusCode::NOT_FOUND, "This page does not exist.")
}

/// The signature, then only the query parameters these routes take; the language asked for.
fn checked(
    s: &MeState,
    merchant: &str,
    payer: &str,
    q: &HashMap<String, String>,
) -> Result<(String, &'static str), Response> {
    let sig = q.get("sig").map(String::as_str).unwrap_or_default();
    if !s.links.verify(merchant, payer, sig) {
        return Err(missing());
    }
    if let Some(name) = q.keys().find(|k| !matches!(k.as_str(), "sig" | "lang")) {
        return Err(page(StatusCode::BAD_REQUEST, &format!("{name}: is not a parameter of this page")));
    }
    Ok((sig.to_string(), if q.get("lang").is_some_and(|l| l == "en") { "en" } else { "zh" }))
}

async fn complain(
    State(s): State<MeState>,
    Path((merchant, payer, charge_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let (sig, lang) = match checked(&s, &merchant, &payer, &q) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(name) = f.keys().find(|k| !matches!(k.as_str(), "kind" | "description")) {
        return page(StatusCode::BAD_REQUEST, &format!("{name}: is not a field of this form"));
    }
    let Some(kind) = f.get("kind").and_then(|k| Kind::from_name(k)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "kind: must be unauthorized_charge, amount_dispute, service_not_delivered or other",
        );
    };
    let description = f.get("description").map(|d| d.trim()).unwrap_or_default();
    if description.chars().count() > MAX_TEXT_CHARS {
        return page(StatusCode::BAD_REQUEST, &format!("description: must be at most {MAX_TEXT_CHARS} characters"));
    }
    // A complaint without words says what its kind says.
    let description = if description.is_empty() { kind.name() } else { description };
    let (Ok(merchant_id), Ok(charge)) = (MerchantId::parse(&merchant), ChargeId::parse(&charge_id)) else {
        return missing();
    };
    let who = Principal::Merchant(merchant_id);
    match s.complaints.file_by_payer(&who, &payer, charge, kind, Source::Payer, description).await {
        Ok(_) => {
            Redirect::to(&format!("/me/{}/{}?sig={sig}&lang={lang}&done=complained", encode(&merchant), encode(&payer)))
                .into_response()
        }
        Err(Error::NotFound(_)) => missing(),
        Err(e) => {
            let status = crate::api::complaints::status_of(e);
            page(autodebit_runtime::grpc::http_status(status.code()), status.message())
        }
    }
}

async fn receipt(
    State(s): State<MeState>,
    Path((merchant, payer, item_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = checked(&s, &merchant, &payer, &q) {
        return r;
    }
    let rows = s
        .store
        .query(
            "SELECT number FROM receipts WHERE item_id = $1 AND merchant_id = $2 AND payer_id = $3",
            &[Value::from(item_id.as_str()), Value::from(merchant.as_str()), Value::from(payer.as_str())],
        )
        .await;
    match rows {
        Ok(rows) => match rows.first().and_then(|r| r.i64(0)) {
            Some(number) => {
                let sig = crate::receipts::signature(&s.receipt_key, &merchant, number);
                Redirect::to(&format!("/receipts/{}/{number}?sig={sig}", encode(&merchant))).into_response()
            }
            None => missing(),
        },
        Err(e) => {
            tracing::error!(error = %e, "reading a payer's receipt failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
