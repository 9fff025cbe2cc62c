//! The test vectors WeChat Pay's official SDKs publish with their own tests
//! (wechatpay-apiv3/wechatpay-java and wechatpay-apiv3/wechatpay-go), run against this crate:
//! the same inputs must give the same outputs. Their key material is in `testdata/`.
use super::cert::CertInfo;
use super::v3::{self, MerchantSigner, PlatformVerifier};

/// wechatpay-java `core/.../model/TestConfig.java`.
const JAVA_API_V3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const JAVA_MERCHANT_SERIAL: &str = "5F1C72E2A8931B72A2E13AF8DEE92471EB397115";
const JAVA_WECHAT_PAY_SERIAL: &str = "440024045C4A427599D09BB4E3DE0279F2E813FD";
const JAVA_MERCHANT_KEY: &str = include_str!("testdata/wechatpay_java_merchant_private_key.pem");
const JAVA_MERCHANT_CERT: &str = include_str!("testdata/wechatpay_java_merchant_certificate.pem");
const JAVA_WECHAT_PAY_PUBLIC_KEY: &str = include_str!("testdata/wechatpay_java_wechat_pay_public_key.pem");

/// wechatpay-java `cipher/AeadAesCipherTest.java`.
const JAVA_AEAD_MESSAGE: &str = "message";
const JAVA_AEAD_ASSOCIATED_DATA: &str = "associatedData";
const JAVA_AEAD_NONCE: &str = "uluk4a9R25RW";
const JAVA_AEAD_CIPHERTEXT: &str = "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI=";

/// wechatpay-java `cipher/RSAVerifierTest.java`: "message" signed with the test merchant key.
const JAVA_SIGNATURE: &str = concat!(
    "Rq+5ZpWV6IHTWE1+9gCrYJKguNgbItpMdlIA+PVCPCdUAKNlohZz7CL7Y8xWDIFJjdGnErMj6Z+Q/h9CF5MV+nAVkqDmBR0uP5pp",
    "sUEzco4ijvKHsvI2ro4boSW6vSfQs3W8I4QSI9a0/NFIgvj83Fv27LIYZf7deaFWmEwd1fpAeJRCyoKyBeJPdsjVx0//Lqe6",
    "Wze2zVdliLcBvaHCfpd8+rAVGS+FQDeWgHqJ7n/Zy09LmV1/ghs7pO1mdjdD16SHKlysAD3K5hNGUJX/SHrEXEcu1yO1AOb/",
    "YvOVkjNh8243rcfXNE5L4ph2XS11vS+2aToKYSOcKUagf0LLaw==",
);

/// wechatpay-go `utils/sign_test.go`: "source" signed with its test key.
const GO_KEY: &str = include_str!("testdata/wechatpay_go_testing_key.pem");
const GO_SIGNATURE: &str = concat!(
    "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoV",
    "z+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLl",
    "i/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj",
    "1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg==",
);

/// wechatpay-go `core/auth/verifiers/sha256withrsa_pubkey_verifier_test.go` and
/// `sha256withrsa_verifier_test.go`: the public half of `GO_KEY`, as a WeChat Pay public key
/// and in a platform certificate, both named `F5765756002FDD77`.
const GO_PUBLIC_KEY_ID: &str = "F5765756002FDD77";
const GO_PUBLIC_KEY: &str = include_str!("testdata/wechatpay_go_public_key.pem");
const GO_PLATFORM_CERT: &str = include_str!("testdata/wechatpay_go_platform_certificate.pem");

/// wechatpay-go `utils/aes_test.go`.
const GO_AES_KEY: &str = "testAPIv3Key0000";
const GO_AES_CIPHERTEXT: &str = "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC";
const GO_AES_NONCE: &str = "wCq51qZv4Yfg";
const GO_AES_ASSOCIATED_DATA: &str = "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8";

#[test]
fn java_aead_aes_cipher_test() {
    // testDecryptToString and testEncryptToString.
    let plain = v3::decrypt_resource(JAVA_API_V3_KEY, JAVA_AEAD_NONCE, JAVA_AEAD_ASSOCIATED_DATA, JAVA_AEAD_CIPHERTEXT);
    assert_eq!(plain.as_deref(), Ok(JAVA_AEAD_MESSAGE));
    let sealed = v3::encrypt_resource(JAVA_API_V3_KEY, JAVA_AEAD_NONCE, JAVA_AEAD_ASSOCIATED_DATA, JAVA_AEAD_MESSAGE);
    assert_eq!(sealed.as_deref(), Ok(JAVA_AEAD_CIPHERTEXT));
}

#[test]
fn java_rsa_signer_and_verifier_tests() {
    // The certificate's serial is the one the SDK names it by.
    let cert = CertInfo::from_pem("wechatpay-java merchant certificate", JAVA_MERCHANT_CERT).unwrap();
    assert_eq!(cert.serial, JAVA_MERCHANT_SERIAL);
    // RSASignerTest signs "message"; PKCS#1 v1.5 is deterministic, so it is RSAVerifierTest's value.
    let signer = MerchantSigner::from_pem("1234567891", JAVA_MERCHANT_SERIAL, JAVA_MERCHANT_KEY).unwrap();
    assert_eq!(signer.sign("message"), JAVA_SIGNATURE);
    // testCertificateVerify: it verifies with the merchant certificate.
    let mut by_certificate = PlatformVerifier::default();
    by_certificate.add_pem(JAVA_MERCHANT_SERIAL, &cert.public_key_pem).unwrap();
    assert_eq!(by_certificate.verify_message(JAVA_MERCHANT_SERIAL, "message", JAVA_SIGNATURE), Ok(()));
    // testPublicKeyVerify: not with WeChat Pay's public key.
    let mut by_public_key = PlatformVerifier::default();
    by_public_key.add_pem(JAVA_WECHAT_PAY_SERIAL, JAVA_WECHAT_PAY_PUBLIC_KEY).unwrap();
    assert!(matches!(
        by_public_key.verify_message(JAVA_WECHAT_PAY_SERIAL, "message", JAVA_SIGNATURE),
        Err(v3::Error::BadSignature { .. })
    ));
}

#[test]
fn go_sign_sha256_with_rsa_test() {
    let signer = MerchantSigner::from_pem("", "", GO_KEY).unwrap();
    assert_eq!(signer.sign("source"), GO_SIGNATURE);
}

#[test]
fn go_sha256_with_rsa_verifier_tests() {
    // The certificate is known by the serial the test gives it, leading zero byte dropped.
    let cert = CertInfo::from_pem("wechatpay-go platform certificate", GO_PLATFORM_CERT).unwrap();
    assert_eq!(cert.serial, GO_PUBLIC_KEY_ID);
    for pem in [GO_PUBLIC_KEY, cert.public_key_pem.as_str()] {
        let mut verifier = PlatformVerifier::default();
        verifier.add_pem(GO_PUBLIC_KEY_ID, pem).unwrap();
        assert_eq!(verifier.verify_message(GO_PUBLIC_KEY_ID, "source", GO_SIGNATURE), Ok(()));
        // "verify failed", "… with empty message", "… with empty signature", "… with non-base64
        // signature", "… with empty keyId", "… with no corresponding pubkey".
        for (serial, message, signature) in [
            (GO_PUBLIC_KEY_ID, "wrong source", GO_SIGNATURE),
            (GO_PUBLIC_KEY_ID, "", GO_SIGNATURE),
            (GO_PUBLIC_KEY_ID, "source", ""),
            (GO_PUBLIC_KEY_ID, "source", "invalid base64 signature"),
            ("", "source", GO_SIGNATURE),
            ("invalid serial number", "source", GO_SIGNATURE),
        ] {
            assert!(
                verifier.verify_message(serial, message, signature).is_err(),
                "{serial:?} {message:?} {signature:?}"
            );
        }
    }
}

#[test]
fn go_decrypt_aes256gcm_test() {
    // "decrypt success" uses a 16-byte key: AES-128, which Go's cipher accepts. WeChat Pay's
    // APIv3 key is 32 bytes and AEAD_AES_256_GCM needs one, so this crate refuses it, naming it.
    let refused = v3::decrypt_resource(GO_AES_KEY, GO_AES_NONCE, GO_AES_ASSOCIATED_DATA, GO_AES_CIPHERTEXT);
    assert!(matches!(refused, Err(v3::Error::Key { what: "APIv3 key", .. })), "{refused:?}");
    // The failing cases, with a key of the right length: invalid Base64, a ciphertext that is
    // not one (Base64 of "Hello World\n"), and a wrong key all fail.
    let decrypt =
        |key: &str, ciphertext: &str| v3::decrypt_resource(key, JAVA_AEAD_NONCE, JAVA_AEAD_ASSOCIATED_DATA, ciphertext);
    for (key, ciphertext) in [
        (JAVA_API_V3_KEY, "invalid cipher"),
        (JAVA_API_V3_KEY, "SGVsbG8gV29ybGQK"),
        ("testAPIv3Key1111testAPIv3Key1111", JAVA_AEAD_CIPHERTEXT),
        ("not a aes key", JAVA_AEAD_CIPHERTEXT),
    ] {
        assert!(decrypt(key, ciphertext).is_err(), "{key} {ciphertext}");
    }
}
