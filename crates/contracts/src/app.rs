//! The contracts service's use cases: each loads what it needs, runs its commands through
//! the repository (`autodebit_runtime::repository`) with the service's tables kept in step,
//! and returns domain values for the handlers to map.
pub mod contracts;
pub mod merchants;
pub mod plans;
pub mod rebuild;
pub mod regions;
pub mod signing;
pub mod wechatpay;

pub use contracts::{AppError, Contracts};
