//! Standard Webhooks signatures (symmetric scheme, `v1`).
//!
//! The signed content is `{msg_id}.{timestamp}.{payload}`; the signature is its HMAC-SHA256
//! under the endpoint's secret, written `v1,<base64>`. A secret is shown to the merchant as
//! `whsec_` followed by the base64 of its bytes.
//!
//! An endpoint's secret is never stored: [`derive`] computes it from the platform's webhook key,
//! the endpoint id and the endpoint's secret generation, so rotating a secret is a new
//! generation on the log.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The prefix that marks a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The fewest key bytes a secret may have (the specification's minimum, 192 bits).
pub const MIN_SECRET_BYTES: usize = 24;

/// The most key bytes a secret may have (512 bits).
pub const MAX_SECRET_BYTES: usize = 64;

/// The signature version of the symmetric scheme.
const VERSION: &str = "v1";

/// Domain separation for [`derive`]: a key derived for anything else never equals a webhook
/// secret.
const DERIVE_LABEL: &[u8] = b"autodebit webhook endpoint secret v1\0";

/// Standard base64 that reads its input with or without the trailing `=` padding, as the
/// reference libraries do.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An endpoint's signing secret: between 24 and 64 key bytes.
///
/// Its `Debug` form hides the key; [`Secret::format`] gives the `whsec_` form, to be shown to
/// the merchant and nowhere else.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret is not base64 (after the optional whsec_ prefix)")]
    NotBase64,
    #[error("secret has {0} key bytes; between 24 and 64 are allowed")]
    Length(usize),
}

impl Secret {
    /// A secret of these key bytes.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Secret, SecretError> {
        let key = key.into();
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    /// Reads `whsec_<base64>`; the prefix may be left out and the padding too, as the reference
    /// libraries accept.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = LENIENT_BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        Secret::from_bytes(key)
    }

    /// The `whsec_<base64>` form a receiver configures its verifier with.
    pub fn format(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Secret, SecretError> {
        Secret::parse(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(whsec_<redacted {} bytes>)", self.0.len())
    }
}

/// Equal when the keys are, compared in constant time.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

/// The secret of an endpoint's `generation`: HMAC-SHA256 under the platform's webhook key of a
/// fixed label, the endpoint id (its length first, so no two pairs of id and generation give
/// the same input) and the generation, 32 bytes.
pub fn derive(master_key: &[u8], endpoint_id: &str, generation: u32) -> Secret {
    let mut mac = HmacSha256::new_from_slice(master_key).expect("HMAC takes a key of any length");
    mac.update(DERIVE_LABEL);
    mac.update(&(endpoint_id.len() as u64).to_be_bytes());
    mac.update(endpoint_id.as_bytes());
    mac.update(&generation.to_be_bytes());
    Secret(mac.finalize().into_bytes().to_vec())
}

fn digest(secret: &Secret, msg_id: &str, timestamp: &str, payload: &[u8]) -> [u8; 32] {
    let mut mac = secret.mac();
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` value for one delivery try: `v1,<base64 HMAC-SHA256 of
/// "{msg_id}.{timestamp_secs}.{payload}">`.
///
/// The message id must not contain a full stop (the platform's ids never do): the receiver
/// could not tell where it ends.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: i64, payload: impl AsRef<[u8]>) -> String {
    let mac = digest(secret, msg_id, &timestamp_secs.to_string(), payload.as_ref());
    format!("{VERSION},{}", STANDARD.encode(mac))
}

/// Why a delivery did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a whole number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than the tolerance in the past")]
    TooOld,
    #[error("webhook-timestamp is more than the tolerance in the future")]
    TooNew,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// Checks a delivery as a receiver would: `timestamp` is the `webhook-timestamp` header as
/// received, and must lie within `tolerance_secs` of `now_secs`; `signature_header` is the
/// `webhook-signature` header, a space-separated list of which one `v1` entry must match
/// (entries of other versions, or that do not decode, are passed over). Signatures are compared
/// in constant time.
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    payload: impl AsRef<[u8]>,
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if sent < now_secs && now_secs.abs_diff(sent) > tolerance_secs {
        return Err(VerifyError::TooOld);
    }
    if sent > now_secs && sent.abs_diff(now_secs) > tolerance_secs {
        return Err(VerifyError::TooNew);
    }
    let expected = digest(secret, msg_id, timestamp, payload.as_ref());
    let mut matched = subtle::Choice::from(0);
    for entry in signature_header.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, encoded)) = entry.split_once(',') else { continue };
        if version != VERSION {
            continue;
        }
        let Ok(given) = LENIENT_BASE64.decode(encoded) else { continue };
        matched |= given.as_slice().ct_eq(&expected);
    }
    if bool::from(matched) { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const PAYLOAD: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    #[test]
    fn signs_the_specification_vector() {
        assert_eq!(sign(&secret(), ID, TIMESTAMP, PAYLOAD), SIGNATURE);
    }

    #[test]
    fn verifies_the_specification_vector() {
        assert_eq!(verify(&secret(), ID, "1614265330", SIGNATURE, PAYLOAD, TIMESTAMP + 10, 300), Ok(()));
    }

    #[test]
    fn a_changed_payload_id_timestamp_or_secret_does_not_verify() {
        let s = secret();
        let t = "1614265330";
        let now = TIMESTAMP;
        assert_eq!(verify(&s, ID, t, SIGNATURE, r#"{"test": 2432232315}"#, now, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify(&s, "msg_other", t, SIGNATURE, PAYLOAD, now, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify(&s, ID, "1614265331", SIGNATURE, PAYLOAD, now, 300), Err(VerifyError::NoMatch));
        let other = derive(b"another key", "ep_1", 0);
        assert_eq!(verify(&other, ID, t, SIGNATURE, PAYLOAD, now, 300), Err(VerifyError::NoMatch));
        // The signature with one bit flipped.
        let flipped = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
        assert_eq!(verify(&s, ID, t, flipped, PAYLOAD, now, 300), Err(VerifyError::NoMatch));
    }

    #[test]
    fn any_matching_entry_of_several_verifies_and_others_are_passed_over() {
        let s = secret();
        let headers = [
            format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIGNATURE}"),
            format!("{SIGNATURE} v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5Bdqz=="),
            format!("garbage v2,abc v1,!!! {SIGNATURE}"),
            format!("  {SIGNATURE}  "),
        ];
        for header in headers {
            assert_eq!(verify(&s, ID, "1614265330", &header, PAYLOAD, TIMESTAMP, 300), Ok(()), "{header}");
        }
        // The right signature under another version does not count.
        let v2 = SIGNATURE.replacen("v1,", "v2,", 1);
        assert_eq!(verify(&s, ID, "1614265330", &v2, PAYLOAD, TIMESTAMP, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify(&s, ID, "1614265330", "", PAYLOAD, TIMESTAMP, 300), Err(VerifyError::NoMatch));
    }

    #[test]
    fn timestamps_outside_the_tolerance_or_malformed_are_refused() {
        let s = secret();
        let v = |now: i64, t: &str| verify(&s, ID, t, SIGNATURE, PAYLOAD, now, 300);
        assert_eq!(v(TIMESTAMP + 300, "1614265330"), Ok(()));
        assert_eq!(v(TIMESTAMP - 300, "1614265330"), Ok(()));
        assert_eq!(v(TIMESTAMP + 301, "1614265330"), Err(VerifyError::TooOld));
        assert_eq!(v(TIMESTAMP - 301, "1614265330"), Err(VerifyError::TooNew));
        for bad in ["", "abc", "-1614265330", "+1614265330", "1614265330.0", " 1614265330", "99999999999999999999"] {
            assert_eq!(v(TIMESTAMP, bad), Err(VerifyError::BadTimestamp), "{bad:?}");
        }
        // Extreme clocks do not overflow.
        assert_eq!(v(i64::MIN, "1614265330"), Err(VerifyError::TooNew));
        assert_eq!(v(i64::MAX, "1614265330"), Err(VerifyError::TooOld));
    }

    #[test]
    fn secrets_parse_and_format() {
        let s = secret();
        assert_eq!(s.as_bytes().len(), 24);
        assert_eq!(s.format(), SECRET);
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(), s);
        assert_eq!(SECRET.parse::<Secret>().unwrap(), s);

        let d = derive(b"k", "ep_1", 0);
        assert!(d.format().ends_with('='), "32 bytes encode with one padding character");
        assert_eq!(Secret::parse(&d.format()).unwrap(), d);
        assert_eq!(Secret::parse(d.format().trim_end_matches('=')).unwrap(), d);

        assert_eq!(Secret::parse("whsec_not base64!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SecretError::Length(5)));
        assert_eq!(Secret::parse(""), Err(SecretError::Length(0)));
        assert_eq!(Secret::from_bytes(vec![7; 65]), Err(SecretError::Length(65)));
        assert!(Secret::from_bytes(vec![7; 64]).is_ok());
        assert!(Secret::from_bytes(vec![7; 24]).is_ok());
        assert_eq!(Secret::from_bytes(vec![7; 23]), Err(SecretError::Length(23)));
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", secret());
        assert!(!shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{shown}");
        assert_eq!(shown, "Secret(whsec_<redacted 24 bytes>)");
    }

    #[test]
    fn derived_secrets_are_32_bytes_stable_and_distinct() {
        let a = derive(b"master", "ep_1", 0);
        assert_eq!(a.as_bytes().len(), 32);
        assert_eq!(derive(b"master", "ep_1", 0), a);
        assert_ne!(derive(b"master", "ep_1", 1), a);
        assert_ne!(derive(b"master", "ep_2", 0), a);
        assert_ne!(derive(b"master2", "ep_1", 0), a);
        // The id's length is part of the input: an id ending in the generation's bytes does not
        // collide with a shorter id.
        assert_ne!(derive(b"master", "ep_1\0\0\0\0", 0), derive(b"master", "ep_1", 0));
        // Pinned (computed apart, as HMAC-SHA256("master", label || be64(4) || "ep_1" || be32(0))):
        // a change to the derivation would change every endpoint's secret.
        assert_eq!(a.format(), "whsec_YXplUr+ATnq46RYdO4yVvRmeWruYaq3vd1ILdzCJCgk=");
    }

    #[test]
    fn a_derived_secret_signs_and_verifies() {
        let s = derive(b"master", "ep_1", 3);
        let sig = sign(&s, "msg_1", 1_700_000_000, b"{}");
        assert_eq!(verify(&s, "msg_1", "1700000000", &sig, "{}", 1_700_000_000, 300), Ok(()));
        assert_eq!(
            verify(&derive(b"master", "ep_1", 2), "msg_1", "1700000000", &sig, "{}", 1_700_000_000, 300),
            Err(VerifyError::NoMatch)
        );
    }
}
