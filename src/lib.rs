//! The platform as a library: what `autodebit run` and `autodebit serve` start, for programs
//! (and tests) that run it in-process.

pub mod platform;
mod wechatpay_config;
