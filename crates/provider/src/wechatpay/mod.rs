//! WeChat Pay.
pub mod cert;
pub mod v2;
pub mod v3;
