//! Certificates: the merchant's API certificate (its serial goes into every v3 request) and
//! WeChat Pay's platform certificates (they verify responses and callbacks). An expired one
//! is refused with a clear error; one that expires within 30 days is reported so it can be
//! renewed in time — the commonest way a working integration stops working.
use rsa::pkcs8::EncodePublicKey;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

/// Warn when a certificate has fewer days than this left.
pub const WARN_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{what}: not a PEM X.509 certificate ({problem})")]
    Unreadable { what: &'static str, problem: String },
    #[error("{what} (serial {serial}) expired at {not_after_secs} (Unix seconds); renew it in the merchant platform")]
    Expired { what: &'static str, serial: String, not_after_secs: i64 },
    #[error("{what} (serial {serial}) is not valid before {not_before_secs} (Unix seconds)")]
    NotYetValid { what: &'static str, serial: String, not_before_secs: i64 },
}

/// What the platform needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Upper-case hex, as WeChat Pay writes serials.
    pub serial: String,
    pub not_before_secs: i64,
    pub not_after_secs: i64,
    /// The subject public key as SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
}

/// How a certificate stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    /// Valid, with this many whole days left (fewer than `WARN_DAYS`).
    ExpiresSoon {
        days_left: i64,
    },
}

impl CertInfo {
    /// Reads a PEM certificate; `what` names it in errors ("merchant API certificate").
    pub fn from_pem(what: &'static str, pem: &str) -> Result<Self, CertError> {
        let unreadable = |problem: String| CertError::Unreadable { what, problem };
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| unreadable(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let serial = hex::encode_upper(tbs.serial_number.as_bytes());
        let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        let spki = tbs.subject_public_key_info.to_der().map_err(|e| unreadable(e.to_string()))?;
        let key = rsa::RsaPublicKey::try_from(
            x509_cert::spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice())
                .map_err(|e| unreadable(e.to_string()))?,
        )
        .map_err(|e| unreadable(format!("not an RSA key: {e}")))?;
        let public_key_pem =
            key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).map_err(|e| unreadable(e.to_string()))?;
        Ok(CertInfo {
            serial: serial.trim_start_matches("00").to_string(),
            not_before_secs: secs(&tbs.validity.not_before),
            not_after_secs: secs(&tbs.validity.not_after),
            public_key_pem,
        })
    }

    /// Whether it may be used at `now_secs`: an error when expired or not yet valid.
    pub fn check(&self, what: &'static str, now_secs: i64) -> Result<Validity, CertError> {
        if now_secs >= self.not_after_secs {
            return Err(CertError::Expired { what, serial: self.serial.clone(), not_after_secs: self.not_after_secs });
        }
        if now_secs < self.not_before_secs {
            return Err(CertError::NotYetValid {
                what,
                serial: self.serial.clone(),
                not_before_secs: self.not_before_secs,
            });
        }
        let days_left = (self.not_after_secs - now_secs) / 86_400;
        Ok(if days_left < WARN_DAYS { Validity::ExpiresSoon { days_left } } else { Validity::Valid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("testdata/merchant_test_cert.pem");
    const PUBLIC: &str = include_str!("testdata/merchant_test_pub.pem");

    #[test]
    fn reads_serial_validity_and_key() {
        let c = CertInfo::from_pem("merchant API certificate", CERT).unwrap();
        assert_eq!(c.serial, "5157F09EFDC096DE15EBE81A47057A72");
        assert!(c.not_after_secs - c.not_before_secs >= 365 * 86_400 - 1);
        assert_eq!(c.public_key_pem.trim(), PUBLIC.trim());
        assert!(matches!(
            CertInfo::from_pem(
                "platform certificate",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(CertError::Unreadable { what: "platform certificate", .. })
        ));
    }

    #[test]
    fn expiry_warns_within_thirty_days_and_refuses_after() {
        let c = CertInfo::from_pem("merchant API certificate", CERT).unwrap();
        let what = "merchant API certificate";
        assert_eq!(c.check(what, c.not_before_secs + 86_400), Ok(Validity::Valid));
        assert_eq!(c.check(what, c.not_after_secs - 10 * 86_400), Ok(Validity::ExpiresSoon { days_left: 10 }));
        let err = c.check(what, c.not_after_secs).unwrap_err();
        assert!(matches!(err, CertError::Expired { .. }));
        assert!(err.to_string().contains("5157F09EFDC096DE15EBE81A47057A72"), "{err}");
        assert!(matches!(c.check(what, c.not_before_secs - 1), Err(CertError::NotYetValid { .. })));
    }
}
