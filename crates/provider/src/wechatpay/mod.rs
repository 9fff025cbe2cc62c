//! WeChat Pay.
pub mod cert;
pub mod mock;
pub mod v2;
pub mod v3;
