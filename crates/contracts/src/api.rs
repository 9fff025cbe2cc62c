//! The contracts service's handlers: gRPC (contracts and signing sessions, merchants, plans)
//! and HTTP (the authorization page, WeChat Pay's signing notices). Each authenticates,
//! parses the request into domain types, calls the application and maps the result.
pub mod contracts;
pub mod me;
pub mod merchants;
pub mod page;
pub mod plans;
pub mod wechatpay;

use crate::app::AppError;
use autodebit_domain::contract::ContractError;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Status};

/// An idempotency key is at most this many characters.
pub const MAX_KEY_LEN: usize = 128;
/// A merchant's own contract code is at most this many characters (WeChat Pay's limit).
pub const MAX_CONTRACT_CODE_LEN: usize = 32;

pub fn request_cause<T>(req: &Request<T>) -> Cause {
    let id = req
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Cause::request(id)
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        match e {
            AppError::NotFound(_) => Status::not_found(e.to_string()),
            AppError::VersionMismatch { .. } => Status::aborted(e.to_string()),
            AppError::CodeTaken(_) => Status::already_exists(e.to_string()),
            AppError::Rule(ContractError::AboveCap { .. } | ContractError::NotPositive) => {
                invalid("amount_per_cycle", &e)
            }
            AppError::Rule(ContractError::Empty(field)) => invalid(field, "must not be empty"),
            AppError::Rule(ContractError::AlreadySigned) => Status::already_exists(e.to_string()),
            AppError::Rule(ContractError::NotSigned) => Status::not_found(e.to_string()),
            AppError::Rule(
                ContractError::Ended(_)
                | ContractError::WrongStatus(..)
                | ContractError::NotYetExpired(_)
                | ContractError::NotDueForWarning
                | ContractError::AlreadyWarned(_),
            ) => Status::failed_precondition(e.to_string()),
            AppError::Store(e) => store_error(e),
        }
    }
}
