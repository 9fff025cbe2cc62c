//! Local fakes of the APIs the notifier's channels call, written from those APIs' own
//! documentation (not from our clients):
//!
//! - `wechat`: WeChat's `cgi-bin` message API (stable access tokens, official-account template
//!   messages, mini-program subscribe messages);
//! - `sms`: Tencent Cloud SMS `SendSms` (TC3-HMAC-SHA256 checked) and its delivery-status
//!   callback.
pub mod sms;
pub mod wechat;
