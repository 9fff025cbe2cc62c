//! WeChat Pay.
pub mod cert;
pub mod client;
#[cfg(test)]
mod sdk_vectors;
pub mod v2;
pub mod v3;

pub use client::{WeChatPay, WeChatPayConfig};

/// The WeChat Pay accounts the platform holds, by `mch_id`: whose they are and their keys.
#[derive(Default)]
pub struct Accounts {
    by_mch_id: std::collections::HashMap<String, (String, std::sync::Arc<WeChatPay>)>,
    by_merchant: std::collections::HashMap<String, std::sync::Arc<WeChatPay>>,
}

impl Accounts {
    /// From (platform merchant id, account) pairs.
    pub fn new(merchants: &[(String, std::sync::Arc<WeChatPay>)]) -> Self {
        Accounts {
            by_mch_id: merchants.iter().map(|(m, w)| (w.config().mch_id.clone(), (m.clone(), w.clone()))).collect(),
            by_merchant: merchants.iter().map(|(m, w)| (m.clone(), w.clone())).collect(),
        }
    }

    /// The platform merchant and account of a WeChat Pay `mch_id`.
    pub fn by_mch_id(&self, mch_id: &str) -> Option<&(String, std::sync::Arc<WeChatPay>)> {
        self.by_mch_id.get(mch_id)
    }

    /// A platform merchant's account, if it charges through WeChat Pay.
    pub fn of_merchant(&self, merchant_id: &str) -> Option<&std::sync::Arc<WeChatPay>> {
        self.by_merchant.get(merchant_id)
    }

    /// Reads and checks a v2 signing or deletion notice: well-formed XML, an account the
    /// platform holds (by `mch_id`), a valid signature with its key — MD5 unless the notice
    /// names another sign type, as WeChat Pay documents these notices (a 32-character `sign`).
    /// The parameters and the platform merchant.
    pub fn verify_v2(&self, xml: &str) -> Result<(v2::Params, String), CallbackRefusal> {
        self.verify_v2_signed(xml, |_| v2::SignType::Md5)
    }

    /// Reads and checks a v2 deduction result like `verify_v2`, but in the sign type the
    /// account's `pappayapply` is sent with: WeChat Pay signs the result as it was asked, and
    /// does not name the sign type in it.
    pub fn verify_deduction(&self, xml: &str) -> Result<(v2::Params, String), CallbackRefusal> {
        self.verify_v2_signed(xml, |account| account.config().sign_type)
    }

    fn verify_v2_signed(
        &self,
        xml: &str,
        unnamed: impl FnOnce(&WeChatPay) -> v2::SignType,
    ) -> Result<(v2::Params, String), CallbackRefusal> {
        let p = v2::from_xml(xml).map_err(|e| CallbackRefusal::Malformed(e.to_string()))?;
        let mch_id = p.get("mch_id").map(String::as_str).unwrap_or_default();
        let (merchant, account) =
            self.by_mch_id(mch_id).ok_or_else(|| CallbackRefusal::UnknownAccount(format!("mch_id {mch_id:?}")))?;
        v2::verify(&p, &account.config().api_v2_key, unnamed(account))
            .map_err(|e| CallbackRefusal::BadSignature(e.to_string()))?;
        Ok((p, merchant.clone()))
    }
}

/// Why a v2 callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefusal {
    #[error("{0}")]
    Malformed(String),
    #[error("{0} is not an account of the platform")]
    UnknownAccount(String),
    #[error("{0}")]
    BadSignature(String),
}

/// A callback refused: its HTTP status, the reason it is counted under, and the message.
#[derive(Debug)]
pub struct Refused(pub axum::http::StatusCode, pub &'static str, pub String);

impl Refused {
    /// A failure of ours: logged under a fresh id; the caller learns only the id.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        let id = format!("err_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        tracing::error!(error_id = %id, error = %e, "callback failed");
        Refused(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "error", format!("internal error {id}"))
    }
}

impl From<CallbackRefusal> for Refused {
    fn from(e: CallbackRefusal) -> Self {
        use axum::http::StatusCode;
        match e {
            CallbackRefusal::Malformed(m) => Refused(StatusCode::BAD_REQUEST, "malformed", m),
            CallbackRefusal::UnknownAccount(_) => Refused(StatusCode::NOT_FOUND, "unknown_merchant", e.to_string()),
            CallbackRefusal::BadSignature(m) => Refused(StatusCode::UNAUTHORIZED, "bad_signature", m),
        }
    }
}

/// The answer to a v2 callback — `SUCCESS`, or `FAIL` with the refusal's message and status —
/// and the result it is counted under.
pub fn v2_reply(kind: &'static str, result: Result<&'static str, Refused>) -> (&'static str, axum::response::Response) {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let (status, counted, body) = match result {
        Ok(counted) => (StatusCode::OK, counted, client::CALLBACK_ACK.to_string()),
        Err(Refused(status, reason, message)) => {
            tracing::warn!(kind, reason, message, "WeChat Pay callback refused");
            let mut p = v2::Params::new();
            p.insert("return_code".into(), "FAIL".into());
            p.insert("return_msg".into(), message);
            (status, reason, v2::to_xml(&p))
        }
    };
    (counted, (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response())
}
