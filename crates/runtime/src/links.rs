//! Signed links for payers: the payer's page (`/me/<merchant>/<payer>?sig=…`) is reached
//! without an account, through a link whose signature is an HMAC of the merchant and the payer
//! under a key kept in the database (`link_keys`). The first service to need the key makes it;
//! every service on the same database reads the same one, so the page (scheduler), its
//! termination (contracts service), its complaints and receipts (charger) and the notices that
//! link to it (notifier) all check one signature.
use autodebit_eventstore::{EventStore, Value};
use hmac::Mac;

const PAYER_PAGE: &str = "payer-page";

/// The key payers' page links are signed with, made on first use and kept.
pub async fn payer_page_key(store: &EventStore) -> anyhow::Result<PayerLinks> {
    let key = kept_key(store, "link_keys", PAYER_PAGE).await?;
    anyhow::ensure!(!key.is_empty(), "the payer page's link key could not be read");
    Ok(PayerLinks { key })
}

/// The key named `name` in `table` (columns `name`, `key`): made at random by the first caller,
/// read by every other one.
pub async fn kept_key(store: &EventStore, table: &str, name: &str) -> anyhow::Result<String> {
    let fresh = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut tx = store.begin().await?;
    tx.execute(
        &format!("INSERT INTO {table} (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"),
        &[Value::from(name), Value::from(fresh)],
    )
    .await?;
    let rows = tx.query(&format!("SELECT key FROM {table} WHERE name = $1"), &[Value::from(name)]).await?;
    tx.commit().await?;
    Ok(rows.first().and_then(|r| r.text(0).map(str::to_string)).unwrap_or_default())
}

/// A refusal of the payer's page's routes, as a small HTML page naming what was wrong.
pub fn refusal(status: axum::http::StatusCode, text: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = format!("<!doctype html><title>{}</title><p id=\"error\">{}</p>", status.as_u16(), escape(text));
    (status, axum::response::Html(body)).into_response()
}

/// `s` as HTML text or an attribute value.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Signs and checks links to a payer's page.
#[derive(Clone)]
pub struct PayerLinks {
    key: String,
}

impl PayerLinks {
    fn mac(&self, merchant: &str, payer: &str) -> hmac::Hmac<sha2::Sha256> {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.as_bytes()).expect("HMAC takes any key length");
        // Each part with its length first, so that no two pairs sign the same bytes.
        for part in [b"me".as_slice(), merchant.as_bytes(), payer.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The signature of the page of `payer` at `merchant`.
    pub fn signature(&self, merchant: &str, payer: &str) -> String {
        hex::encode(self.mac(merchant, payer).finalize().into_bytes())
    }

    /// Whether `sig` is the page's signature (compared in constant time).
    pub fn verify(&self, merchant: &str, payer: &str, sig: &str) -> bool {
        let Ok(raw) = hex::decode(sig) else { return false };
        self.mac(merchant, payer).verify_slice(&raw).is_ok()
    }

    /// What every form of the page checks before anything else: the signature (else 404, as
    /// a page that does not exist), then only `sig` and `lang` in the query (else 400 naming
    /// the parameter). The path back to the page with the language asked for.
    pub fn check_action(
        &self,
        merchant: &str,
        payer: &str,
        query: &std::collections::HashMap<String, String>,
    ) -> Result<String, axum::response::Response> {
        use axum::http::StatusCode;
        let sig = query.get("sig").map(String::as_str).unwrap_or_default();
        if !self.verify(merchant, payer, sig) {
            return Err(refusal(StatusCode::NOT_FOUND, "This page does not exist."));
        }
        if let Some(name) = query.keys().find(|k| !matches!(k.as_str(), "sig" | "lang")) {
            return Err(refusal(StatusCode::BAD_REQUEST, &format!("{name}: is not a parameter of this page")));
        }
        let lang = if query.get("lang").is_some_and(|l| l == "en") { "en" } else { "zh" };
        Ok(format!("{}&lang={lang}", self.path(merchant, payer)))
    }

    /// The page's path with its signature, relative to the public URL.
    pub fn path(&self, merchant: &str, payer: &str) -> String {
        format!("/me/{}/{}?sig={}", encode(merchant), encode(payer), self.signature(merchant, payer))
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_the_merchant_and_the_payer() {
        let links = PayerLinks { key: "k".into() };
        let sig = links.signature("mc_1", "payer-42");
        assert!(links.verify("mc_1", "payer-42", &sig));
        assert!(!links.verify("mc_2", "payer-42", &sig));
        assert!(!links.verify("mc_1", "payer-43", &sig));
        // The lengths keep ("a", "b\nc") apart from ("a\nb", "c").
        assert_ne!(links.signature("a", "b\nc"), links.signature("a\nb", "c"));
        assert!(!links.verify("mc_1", "payer-42", "zz"));
        assert!(!PayerLinks { key: "other".into() }.verify("mc_1", "payer-42", &sig));
        assert_eq!(links.path("mc_1", "p 1/2"), format!("/me/mc_1/p%201%2F2?sig={}", links.signature("mc_1", "p 1/2")));
    }
}
