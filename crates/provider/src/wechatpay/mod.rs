//! WeChat Pay.
pub mod cert;
pub mod client;
pub mod mock;
pub mod v2;
pub mod v3;

pub use client::{WeChatPay, WeChatPayConfig};
