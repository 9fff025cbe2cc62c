//! Payment providers. This release holds WeChat Pay's API v2 message layer — the signature
//! rules and the XML the classic papay endpoints and callbacks speak — built so that the three
//! commonest integration failures are plain: a signature mismatch shows the exact string that
//! was signed, and a missing parameter is named before any request is sent.
pub mod wechatpay;
