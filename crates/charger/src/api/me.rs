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
use autodebit_runtime::links::{PayerLinks, encode, refusal};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
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

fn missing() -> Response {
    refusal(StatusCode::NOT_FOUND, "This page does not exist.")
}

async fn complain(
    State(s): State<MeState>,
    Path((merchant, payer, charge_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let back = match s.links.check_action(&merchant, &payer, &q) {
        Ok(back) => back,
        Err(refused) => return refused,
    };
    if let Some(name) = f.keys().find(|k| !matches!(k.as_str(), "kind" | "description")) {
        return refusal(StatusCode::BAD_REQUEST, &format!("{name}: is not a field of this form"));
    }
    let Some(kind) = f.get("kind").and_then(|k| Kind::from_name(k)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "kind: must be unauthorized_charge, amount_dispute, service_not_delivered or other",
        );
    };
    let description = f.get("description").map(|d| d.trim()).unwrap_or_default();
    if description.chars().count() > MAX_TEXT_CHARS {
        return refusal(StatusCode::BAD_REQUEST, &format!("description: must be at most {MAX_TEXT_CHARS} characters"));
    }
    // A complaint without words says what its kind says.
    let description = if description.is_empty() { kind.name() } else { description };
    let (Ok(merchant_id), Ok(charge)) = (MerchantId::parse(&merchant), ChargeId::parse(&charge_id)) else {
        return missing();
    };
    let who = Principal::Merchant(merchant_id);
    match s.complaints.file_by_payer(&who, &payer, charge, kind, Source::Payer, description).await {
        Ok(_) => Redirect::to(&format!("{back}&done=complained")).into_response(),
        Err(Error::NotFound(_)) => missing(),
        Err(e) => {
            let status = crate::api::complaints::status_of(e);
            refusal(autodebit_runtime::grpc::http_status(status.code()), status.message())
        }
    }
}

async fn receipt(
    State(s): State<MeState>,
    Path((merchant, payer, item_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = s.links.check_action(&merchant, &payer, &q) {
        return refused;
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
