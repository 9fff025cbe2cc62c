//! The channels notices go out on, each a client of an outside API.
pub mod wechat;
