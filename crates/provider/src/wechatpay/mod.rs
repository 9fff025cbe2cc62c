//! WeChat Pay.
pub mod v2;
