//! Merchant webhooks as the Standard Webhooks specification describes them: each delivery is an
//! HTTP POST of a JSON body carrying the `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` headers, the signature an HMAC-SHA256 of `{id}.{timestamp}.{body}` under
//! the endpoint's secret.
//!
//! - `sign`: endpoint secrets (derived from the platform's webhook key, never stored), signing
//!   and verifying;
//! - `url`: which endpoint URLs and addresses are allowed, so that a merchant's URL cannot reach
//!   the platform's own network, and the DNS resolver that keeps to those addresses;
//! - `send`: one delivery try;
//! - `retry`: when a failed delivery is tried again, and when a failing endpoint is given up on.

pub mod retry;
pub mod send;
pub mod sign;
pub mod url;
