//! WeChat Pay.
pub mod v2;
pub mod v3;
