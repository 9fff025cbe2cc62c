//! The payer's page's termination (`POST /me/<merchant>/<payer>/contracts/<id>/terminate?sig=…`):
//! the page is the scheduler's (see `autodebit_scheduler`'s `api::me`); ending a contract is
//! this service's, so its form posts here. The signature is checked first; a contract that is
//! not this payer's at this merchant answers 404 as one that does not exist. The contract is
//! terminated in mode PAYER and the payer is sent back to the page.
use crate::app::contracts::{AppError, Contracts};
use autodebit_domain::ContractId;
use autodebit_domain::contract::{ContractCommand, TerminationMode};
use autodebit_runtime::codec::Cause;
use autodebit_runtime::links::{PayerLinks, refusal};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use std::collections::HashMap;

#[derive(Clone)]
pub struct MeState {
    pub contracts: Contracts,
    pub links: PayerLinks,
}

pub fn routes(state: MeState) -> axum::Router {
    axum::Router::new()
        .route("/me/{merchant}/{payer}/contracts/{contract_id}/terminate", post(terminate))
        .with_state(state)
}

async fn terminate(
    State(s): State<MeState>,
    Path((merchant, payer, contract_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let back = match s.links.check_action(&merchant, &payer, &q) {
        Ok(back) => back,
        Err(refused) => return refused,
    };
    let not_found = || refusal(StatusCode::NOT_FOUND, &format!("contract_id: no contract {contract_id}"));
    let Ok(id) = ContractId::parse(&contract_id) else { return not_found() };
    let contract = match s.contracts.get(id).await {
        Ok((c, _)) => c,
        Err(AppError::NotFound(_)) => return not_found(),
        Err(e) => return failure(e),
    };
    if contract.merchant_id.as_str() != merchant || contract.payer_id.as_str() != payer {
        return not_found();
    }
    let command =
        ContractCommand::Terminate { mode: TerminationMode::Payer, remark: "ended on the payer's page".into() };
    let cause = Cause::request(format!("payer-page/terminate/{contract_id}"));
    match s.contracts.execute(id, None, command, &cause).await {
        Ok(_) => Redirect::to(&format!("{back}&done=terminated")).into_response(),
        Err(e) => failure(e),
    }
}

fn failure(e: AppError) -> Response {
    let status: tonic::Status = e.into();
    refusal(autodebit_runtime::grpc::http_status(status.code()), status.message())
}
