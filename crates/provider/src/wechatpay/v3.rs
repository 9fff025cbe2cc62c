//! API v3 (the pre-deduction notice `POST /v3/papay/contracts/{contract_id}/notify`, and v3
//! JSON callbacks): requests signed with the merchant's RSA key, responses and callbacks
//! signed by WeChat Pay and checked against its platform certificate or public key, callback
//! resources encrypted with AEAD_AES_256_GCM under the merchant's APIv3 key.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use sha2::Sha256;
use std::collections::HashMap;

/// The most a response's or callback's timestamp may differ from the local clock.
pub const MAX_SKEW_SECS: i64 = 5 * 60;
/// WeChat Pay's probe traffic carries signatures with this prefix; they must fail.
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what}: {problem}")]
    Key { what: &'static str, problem: String },
    /// Names the exact message that was checked, to compare with what was sent.
    #[error("signature does not verify over {message:?}")]
    BadSignature { message: String },
    #[error("a probe signature (WECHATPAY/SIGNTEST/…) is refused by design")]
    Probe,
    #[error("Wechatpay-Serial {0:?} names no known platform certificate or public key")]
    UnknownSerial(String),
    #[error("Wechatpay-Timestamp {timestamp} is {skew} s from the local clock (at most {MAX_SKEW_SECS} s)")]
    Skew { timestamp: i64, skew: i64 },
    #[error("cannot decrypt the resource: {0}")]
    Decrypt(&'static str),
}

/// What a request's signature covers: five lines, each ending in `\n`. `url` is the path
/// with its query, without the host; `body` is empty for GET.
pub fn request_message(method: &str, url: &str, timestamp: i64, nonce: &str, body: &str) -> String {
    format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// What a response's or callback's signature covers.
pub fn response_message(timestamp: i64, nonce: &str, body: &str) -> String {
    format!("{timestamp}\n{nonce}\n{body}\n")
}

/// Signs requests as one merchant.
pub struct MerchantSigner {
    mchid: String,
    /// The serial number of the merchant's API certificate.
    serial: String,
    key: SigningKey<Sha256>,
}

impl MerchantSigner {
    /// From the merchant's API private key (PKCS#8 PEM, as WeChat Pay issues `apiclient_key.pem`).
    pub fn from_pem(mchid: &str, serial: &str, pem: &str) -> Result<Self, Error> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::Key { what: "merchant private key", problem: e.to_string() })?;
        Ok(MerchantSigner { mchid: mchid.into(), serial: serial.into(), key: SigningKey::new(key) })
    }

    /// SHA256-with-RSA over `message`, Base64.
    pub fn sign(&self, message: &str) -> String {
        B64.encode(self.key.sign(message.as_bytes()).to_bytes())
    }

    /// The `Authorization` header of a request.
    pub fn authorization(&self, method: &str, url: &str, body: &str, timestamp: i64, nonce: &str) -> String {
        let signature = self.sign(&request_message(method, url, timestamp, nonce, body));
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.mchid, self.serial
        )
    }
}

/// Checks what WeChat Pay signs, with the keys it may sign with: platform certificates by
/// serial, or WeChat Pay public keys by id (`PUB_KEY_ID_…`). Both are kept during a switch.
#[derive(Default)]
pub struct PlatformVerifier {
    keys: HashMap<String, VerifyingKey<Sha256>>,
}

impl PlatformVerifier {
    /// Adds a key (SubjectPublicKeyInfo PEM) under the serial or id WeChat Pay names it by.
    pub fn add_pem(&mut self, serial: &str, pem: &str) -> Result<(), Error> {
        let key = rsa::RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| Error::Key { what: "WeChat Pay public key", problem: e.to_string() })?;
        self.keys.insert(serial.into(), VerifyingKey::new(key));
        Ok(())
    }

    /// Checks a response or callback from its `Wechatpay-*` headers and body, at `now_secs`.
    pub fn verify(
        &self,
        serial: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
        signature: &str,
        now_secs: i64,
    ) -> Result<(), Error> {
        if signature.starts_with(PROBE_PREFIX) {
            return Err(Error::Probe);
        }
        let skew = (now_secs - timestamp).abs();
        if skew > MAX_SKEW_SECS {
            return Err(Error::Skew { timestamp, skew });
        }
        self.verify_message(serial, &response_message(timestamp, nonce, body), signature)
    }

    /// Checks a Base64 SHA256-with-RSA `signature` over `message` with the key named `serial`.
    pub fn verify_message(&self, serial: &str, message: &str, signature: &str) -> Result<(), Error> {
        let key = self.keys.get(serial).ok_or_else(|| Error::UnknownSerial(serial.into()))?;
        let bad = || Error::BadSignature { message: message.to_string() };
        let bytes = B64.decode(signature).map_err(|_| bad())?;
        let signature = Signature::try_from(bytes.as_slice()).map_err(|_| bad())?;
        key.verify(message.as_bytes(), &signature).map_err(|_| bad())
    }
}

/// Decrypts a callback's `resource` (AEAD_AES_256_GCM): the key is the 32-byte APIv3 key,
/// the nonce its 12 characters, the associated data as given, the tag the last 16 bytes of
/// the Base64 ciphertext.
pub fn decrypt_resource(
    api_v3_key: &str,
    nonce: &str,
    associated_data: &str,
    ciphertext: &str,
) -> Result<String, Error> {
    if api_v3_key.len() != 32 {
        return Err(Error::Key { what: "APIv3 key", problem: format!("is {} bytes, not 32", api_v3_key.len()) });
    }
    if nonce.len() != 12 {
        return Err(Error::Decrypt("the nonce is not 12 bytes"));
    }
    let cipher = Aes256Gcm::new_from_slice(api_v3_key.as_bytes()).map_err(|_| Error::Decrypt("bad key"))?;
    let sealed = B64.decode(ciphertext).map_err(|_| Error::Decrypt("the ciphertext is not Base64"))?;
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: &sealed, aad: associated_data.as_bytes() })
        .map_err(|_| {
            Error::Decrypt("authentication failed (wrong APIv3 key, nonce or associated data, or tampered)")
        })?;
    String::from_utf8(plain).map_err(|_| Error::Decrypt("the plaintext is not UTF-8"))
}

/// Encrypts a callback resource as WeChat Pay does (the inverse of `decrypt_resource`): for the
/// mock WeChat Pay, and for tests that play WeChat Pay.
pub fn encrypt_resource(
    api_v3_key: &str,
    nonce: &str,
    associated_data: &str,
    plaintext: &str,
) -> Result<String, Error> {
    if api_v3_key.len() != 32 || nonce.len() != 12 {
        return Err(Error::Key { what: "APIv3 key and nonce", problem: "must be 32 and 12 bytes".into() });
    }
    let cipher = Aes256Gcm::new_from_slice(api_v3_key.as_bytes()).map_err(|_| Error::Decrypt("bad key"))?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload { msg: plaintext.as_bytes(), aad: associated_data.as_bytes() },
        )
        .map_err(|_| Error::Decrypt("encryption failed"))?;
    Ok(B64.encode(sealed))
}

/// A v3 callback's envelope, read strictly: every field the platform relies on is present
/// and of the right type, or the error names the first that is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub resource_type: String,
    pub summary: String,
    pub resource: Resource,
}

/// The encrypted part of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    pub associated_data: String,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{0} is missing or not a string")]
    Field(&'static str),
    #[error("resource.algorithm {0:?} is not AEAD_AES_256_GCM")]
    Algorithm(String),
    #[error(transparent)]
    Decrypt(#[from] Error),
}

impl Notification {
    pub fn parse(body: &[u8]) -> Result<Self, NotificationError> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| NotificationError::NotJson(e.to_string()))?;
        let text = |v: &serde_json::Value, path: &'static str, key: &str| -> Result<String, NotificationError> {
            v.get(key).and_then(|x| x.as_str()).map(str::to_string).ok_or(NotificationError::Field(path))
        };
        // `associated_data` and `summary` may be empty or absent.
        let optional = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let r = v.get("resource").filter(|r| r.is_object()).ok_or(NotificationError::Field("resource"))?;
        let resource = Resource {
            original_type: optional(r, "original_type"),
            algorithm: text(r, "resource.algorithm", "algorithm")?,
            ciphertext: text(r, "resource.ciphertext", "ciphertext")?,
            associated_data: optional(r, "associated_data"),
            nonce: text(r, "resource.nonce", "nonce")?,
        };
        if resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(NotificationError::Algorithm(resource.algorithm));
        }
        Ok(Notification {
            id: text(&v, "id", "id")?,
            create_time: text(&v, "create_time", "create_time")?,
            event_type: text(&v, "event_type", "event_type")?,
            resource_type: optional(&v, "resource_type"),
            summary: optional(&v, "summary"),
            resource,
        })
    }

    /// The decrypted resource (JSON text) under the merchant's APIv3 key.
    pub fn open(&self, api_v3_key: &str) -> Result<String, NotificationError> {
        let r = &self.resource;
        Ok(decrypt_resource(api_v3_key, &r.nonce, &r.associated_data, &r.ciphertext)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = include_str!("testdata/merchant_test_key.pem");
    const PUBLIC: &str = include_str!("testdata/merchant_test_pub.pem");

    fn signer() -> MerchantSigner {
        MerchantSigner::from_pem("1900000001", "5157F09EFDC096DE15EBE81A47057A72", PRIVATE).unwrap()
    }

    #[test]
    fn the_request_message_and_header() {
        let m = request_message(
            "POST",
            "/v3/papay/contracts/ct1/notify",
            1_554_208_460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
            "{}",
        );
        assert_eq!(m, "POST\n/v3/papay/contracts/ct1/notify\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{}\n");
        let h = signer().authorization("GET", "/v3/certificates", "", 1_554_208_460, "abc");
        assert!(
            h.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\",nonce_str=\"abc\",timestamp=\"1554208460\"")
        );
        assert!(h.contains("serial_no=\"5157F09EFDC096DE15EBE81A47057A72\",signature=\""), "{h}");
    }

    #[test]
    fn signatures_verify_and_tampering_is_named() {
        let s = signer();
        let mut v = PlatformVerifier::default();
        v.add_pem("PUB_KEY_ID_0114", PUBLIC).unwrap();
        let (ts, nonce, body) = (1_700_000_000, "n0nce", r#"{"code":"SUCCESS"}"#);
        let sig = s.sign(&response_message(ts, nonce, body));
        assert_eq!(v.verify("PUB_KEY_ID_0114", ts, nonce, body, &sig, ts + 10), Ok(()));
        let Err(Error::BadSignature { message }) = v.verify("PUB_KEY_ID_0114", ts, nonce, "{}", &sig, ts) else {
            panic!("a changed body verified")
        };
        assert_eq!(message, format!("{ts}\n{nonce}\n{{}}\n"));
        assert_eq!(
            v.verify("PUB_KEY_ID_0114", ts, nonce, body, &sig, ts + 301),
            Err(Error::Skew { timestamp: ts, skew: 301 })
        );
        assert_eq!(v.verify("other", ts, nonce, body, &sig, ts), Err(Error::UnknownSerial("other".into())));
        assert_eq!(v.verify("PUB_KEY_ID_0114", ts, nonce, body, "WECHATPAY/SIGNTEST/abc", ts), Err(Error::Probe));
        assert!(matches!(v.verify("PUB_KEY_ID_0114", ts, nonce, body, "%%%", ts), Err(Error::BadSignature { .. })));
    }

    #[test]
    fn notifications_parse_strictly_and_open() {
        let key = "0123456789abcdef0123456789abcdef";
        let plain = r#"{"out_trade_no":"abc_1","trade_state":"SUCCESS"}"#;
        let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let sealed = cipher
            .encrypt(Nonce::from_slice(b"fdasflkja484"), Payload { msg: plain.as_bytes(), aad: b"transaction" })
            .unwrap();
        let body = serde_json::json!({
            "id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
            "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": B64.encode(&sealed), "associated_data": "transaction", "nonce": "fdasflkja484"}
        });
        let n = Notification::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(n.open(key).unwrap(), plain);
        let mut no_nonce = body.clone();
        no_nonce["resource"].as_object_mut().unwrap().remove("nonce");
        assert_eq!(
            Notification::parse(no_nonce.to_string().as_bytes()),
            Err(NotificationError::Field("resource.nonce"))
        );
        let mut other = body.clone();
        other["resource"]["algorithm"] = "AES_128_CBC".into();
        assert!(matches!(Notification::parse(other.to_string().as_bytes()), Err(NotificationError::Algorithm(_))));
        assert!(matches!(Notification::parse(b"{not json"), Err(NotificationError::NotJson(_))));
        assert!(matches!(n.open("0123456789abcdef0123456789abcdeX"), Err(NotificationError::Decrypt(_))));
    }

    #[test]
    fn resources_decrypt_and_tampering_fails() {
        let key = "0123456789abcdef0123456789abcdef";
        let (nonce, aad) = ("fdasflkja484", "transaction");
        let plain = r#"{"out_trade_no":"ch_1_1","trade_state":"SUCCESS"}"#;
        let cipher = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let sealed = cipher
            .encrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .unwrap();
        let b64 = B64.encode(&sealed);
        assert_eq!(decrypt_resource(key, nonce, aad, &b64).unwrap(), plain);
        assert!(matches!(decrypt_resource(key, nonce, "other", &b64), Err(Error::Decrypt(_))));
        assert!(matches!(decrypt_resource("short", nonce, aad, &b64), Err(Error::Key { .. })));
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(matches!(decrypt_resource(key, nonce, aad, &B64.encode(&tampered)), Err(Error::Decrypt(_))));
    }
}
