//! Payment providers. This release holds WeChat Pay's message layer: API v2's signatures and
//! flat XML (classic papay endpoints and callbacks), and API v3's request signing, response
//! and callback verification and resource decryption (the pre-deduction notice). It is built so
//! that the commonest integration failures are plain: a signature mismatch shows the exact
//! string that was signed, a missing parameter is named before any request is sent, and a
//! timestamp outside five minutes, an unknown key serial or a probe signature is named as such.
pub mod wechatpay;
