//! The rules of recurring deduction as pure functions: no I/O, no async.
//!
//! Aggregates follow one shape: `decide(state, command, now) -> Result<Vec<Event>, Error>`
//! and `apply(state, event) -> state`, so every rule is testable without a database.

pub mod aggregate;
pub mod calendar;
pub mod charge;
pub mod clock;
pub mod complaint;
pub mod contract;
pub mod credit;
pub mod cycle;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod mask;
pub mod merchant;
pub mod modification;
pub mod money;
pub mod notice;
pub mod plan;
pub mod reconciliation;
pub mod retry;
pub mod risk;
pub mod schedule;
pub mod settlement;
pub mod signing;
pub mod statement;
pub mod terms;
pub mod usage;
pub mod validity;
pub mod webhook;
pub mod window;
pub mod zombie;

pub use aggregate::Aggregate;
pub use clock::{Clock, SystemClock, TestClock, Timestamp};
pub use cycle::Cycle;
pub use ids::{ChargeId, ContractId, IdError, MerchantId, PayerId};
pub use money::{Currency, MAX_CHARGE_CNY_FEN, Money, MoneyError};
