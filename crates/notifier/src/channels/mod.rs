//! The channels notices reach payers through, each a client of an outside API.
pub mod sms;
