//! API v2 (classic papay: `pappayapply`, `paporderquery`, `querycontract`, `deletecontract`,
//! the signing entries, and their callbacks): flat XML messages signed with the merchant's
//! APIv2 key.
//!
//! The signature: every parameter except `sign` whose value is not empty, sorted by name in
//! byte order, joined as `k1=v1&k2=v2…`, then `&key=<APIv2 key>`; MD5 of that string, or
//! HMAC-SHA256 keyed with the APIv2 key, as upper-case hex.
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use quick_xml::events::{BytesCData, BytesEnd, BytesStart, Event};
use std::collections::BTreeMap;

/// A message's parameters by name; sorted, as the signature needs them.
pub type Params = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    /// The `sign_type` value WeChat Pay uses; MD5 requests may leave it out.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The sign type a message declares; none means MD5.
    pub fn of(params: &Params) -> Result<SignType, Error> {
        match params.get("sign_type").map(String::as_str) {
            None | Some("") | Some("MD5") => Ok(SignType::Md5),
            Some("HMAC-SHA256") => Ok(SignType::HmacSha256),
            Some(other) => Err(Error::UnknownSignType(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The signature does not match: shows both values and the exact string that was signed
    /// (with the key masked), the first thing to compare against WeChat Pay's own tool.
    #[error("signature mismatch: got {got}, expected {expected} over {signed:?}")]
    SignatureMismatch { got: String, expected: String, signed: String },
    #[error("the message has no sign")]
    Unsigned,
    #[error("missing parameter {0}: required before the request is sent")]
    Missing(&'static str),
    #[error("sign_type {0:?} is neither MD5 nor HMAC-SHA256")]
    UnknownSignType(String),
    #[error("malformed XML: {0}")]
    Xml(String),
}

/// The string a signature is computed over, without the key: `k1=v1&k2=v2…`.
pub fn string_to_sign(params: &Params) -> String {
    params
        .iter()
        .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// The signature of `params` under `key`.
pub fn sign(params: &Params, key: &str, sign_type: SignType) -> String {
    let full = format!("{}&key={key}", string_to_sign(params));
    match sign_type {
        SignType::Md5 => hex_upper(&Md5::digest(full.as_bytes())),
        SignType::HmacSha256 => {
            // HMAC takes a key of any length.
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
            mac.update(full.as_bytes());
            hex_upper(&mac.finalize().into_bytes())
        }
    }
}

/// Adds `sign` (and `sign_type` when it is not MD5) to a request's `params`.
pub fn sign_in_place(params: &mut Params, key: &str, sign_type: SignType) {
    if sign_type != SignType::Md5 {
        params.insert("sign_type".into(), sign_type.as_str().into());
    }
    sign_answer(params, key, sign_type);
}

/// Adds `sign` alone, as WeChat Pay signs its answers and result notices: in the sign type of
/// the request, which they do not name.
pub fn sign_answer(params: &mut Params, key: &str, sign_type: SignType) {
    let signature = sign(params, key, sign_type);
    params.insert("sign".into(), signature);
}

/// Checks a received message's `sign`: under the sign type it declares, or `unnamed` when it
/// declares none. WeChat Pay's answers name none: it signs each with the sign type of the
/// request it answers, so `unnamed` is the sign type the request was sent with.
pub fn verify(params: &Params, key: &str, unnamed: SignType) -> Result<(), Error> {
    let got = params.get("sign").filter(|s| !s.is_empty()).ok_or(Error::Unsigned)?;
    let sign_type = match params.get("sign_type").filter(|t| !t.is_empty()) {
        None => unnamed,
        Some(_) => SignType::of(params)?,
    };
    let expected = sign(params, key, sign_type);
    // Both are upper-case hex of fixed length; compare without an early exit.
    let same = got.len() == expected.len()
        && got.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a.to_ascii_uppercase() ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Error::SignatureMismatch {
            got: got.clone(),
            expected,
            signed: format!("{}&key=***", string_to_sign(params)),
        })
    }
}

/// Fails with the first of `names` that `params` lacks or leaves empty.
pub fn require(params: &Params, names: &[&'static str]) -> Result<(), Error> {
    match names.iter().find(|n| params.get(**n).is_none_or(|v| v.is_empty())) {
        Some(n) => Err(Error::Missing(n)),
        None => Ok(()),
    }
}

/// `params` as WeChat Pay's flat XML: `<xml><k><![CDATA[v]]></k>…</xml>`.
pub fn to_xml(params: &Params) -> String {
    let mut writer = quick_xml::Writer::new(Vec::new());
    let mut write = || -> std::io::Result<()> {
        writer.write_event(Event::Start(BytesStart::new("xml")))?;
        for (k, v) in params {
            writer.write_event(Event::Start(BytesStart::new(k.as_str())))?;
            // A CDATA section cannot hold "]]>": split it across two sections.
            for (i, part) in v.split("]]>").enumerate() {
                let text = if i == 0 { part.to_string() } else { format!(">{part}") };
                let text = if v.contains("]]>") && i + 1 < v.split("]]>").count() { format!("{text}]]") } else { text };
                writer.write_event(Event::CData(BytesCData::new(text)))?;
            }
            writer.write_event(Event::End(BytesEnd::new(k.as_str())))?;
        }
        writer.write_event(Event::End(BytesEnd::new("xml")))?;
        Ok(())
    };
    // Writing to memory does not fail.
    let _ = write();
    String::from_utf8(writer.into_inner()).unwrap_or_default()
}

/// The parameters of a flat `<xml>` message. Nested elements, a root other than `xml`, a
/// repeated name, a document type declaration or anything after the root are refused.
pub fn from_xml(xml: &str) -> Result<Params, Error> {
    let bad = |m: &str| Error::Xml(m.to_string());
    // WeChat Pay's parameter names are letters, digits and underscores; no attributes.
    let named = |e: &BytesStart| -> Result<String, Error> {
        let raw = e.name();
        let raw = raw.as_ref();
        if raw.is_empty() || !raw.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            return Err(Error::Xml(format!("{:?} is not a parameter name", String::from_utf8_lossy(raw))));
        }
        if e.attributes().next().is_some() {
            return Err(Error::Xml("attributes are not allowed".into()));
        }
        Ok(String::from_utf8_lossy(raw).into_owned())
    };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut params = Params::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut value = String::new();
    let mut seen_root = false;
    loop {
        match reader.read_event().map_err(|e| Error::Xml(e.to_string()))? {
            Event::Start(e) => {
                let name = named(&e)?;
                match depth {
                    0 if name == "xml" && !seen_root => seen_root = true,
                    0 => return Err(bad("the root element must be <xml>, once")),
                    1 => {
                        current = Some(name);
                        value.clear();
                    }
                    _ => return Err(bad("nested elements are not allowed")),
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if depth != 1 {
                    return Err(bad("an empty element outside <xml>"));
                }
                let name = named(&e)?;
                if params.insert(name.clone(), String::new()).is_some() {
                    return Err(Error::Xml(format!("{name} appears twice")));
                }
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| bad("unbalanced end tag"))?;
                if depth == 1 {
                    let name = current.take().ok_or_else(|| bad("unbalanced end tag"))?;
                    if params.insert(name.clone(), std::mem::take(&mut value)).is_some() {
                        return Err(Error::Xml(format!("{name} appears twice")));
                    }
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| Error::Xml(e.to_string()))?;
                let text = quick_xml::escape::unescape(&text).map_err(|e| Error::Xml(e.to_string()))?;
                if depth == 2 {
                    value.push_str(&text);
                } else if !text.trim().is_empty() {
                    return Err(bad("text outside an element"));
                }
            }
            Event::CData(c) => {
                if depth != 2 {
                    return Err(bad("CDATA outside an element"));
                }
                value.push_str(std::str::from_utf8(&c).map_err(|_| bad("CDATA is not UTF-8"))?);
            }
            Event::DocType(_) => return Err(bad("document type declarations are not accepted")),
            Event::Eof => break,
            Event::GeneralRef(r) => {
                // Character references such as &#38; inside a value.
                let resolved = r
                    .resolve_char_ref()
                    .map_err(|e| Error::Xml(e.to_string()))?
                    .ok_or_else(|| bad("only character references are accepted"))?;
                if depth == 2 {
                    value.push(resolved);
                }
            }
            _ => {}
        }
    }
    if !seen_root || depth != 0 {
        return Err(bad("incomplete document"));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// WeChat Pay's own worked example of the signature algorithm.
    const KEY: &str = "192006250b4c09247ec02edce69f6a2d";
    fn example() -> Params {
        params(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }

    #[test]
    fn matches_wechat_pays_worked_example() {
        let p = example();
        assert_eq!(
            string_to_sign(&p),
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
        );
        assert_eq!(sign(&p, KEY, SignType::Md5), "9A0A8659F005D6984697E2CA0A9CF3B7");
        assert_eq!(
            sign(&p, KEY, SignType::HmacSha256),
            "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
        );
    }

    #[test]
    fn empty_values_and_sign_are_left_out() {
        let mut p = example();
        p.insert("attach".into(), String::new());
        p.insert("sign".into(), "whatever".into());
        assert_eq!(sign(&p, KEY, SignType::Md5), "9A0A8659F005D6984697E2CA0A9CF3B7");
    }

    #[test]
    fn a_mismatch_shows_what_was_signed() {
        let mut p = example();
        sign_in_place(&mut p, KEY, SignType::HmacSha256);
        assert_eq!(p["sign_type"], "HMAC-SHA256");
        assert_eq!(verify(&p, KEY, SignType::Md5), Ok(()), "a declared sign type is the one used");
        p.insert("body".into(), "tampered".into());
        let Err(Error::SignatureMismatch { signed, .. }) = verify(&p, KEY, SignType::HmacSha256) else {
            panic!("accepted a tampered body")
        };
        assert!(signed.contains("body=tampered") && signed.ends_with("&key=***"), "{signed}");
        assert!(!signed.contains(KEY));
        assert_eq!(verify(&example(), KEY, SignType::Md5), Err(Error::Unsigned));
    }

    /// WeChat Pay's answers carry no `sign_type`: one signed HMAC-SHA256 verifies only when the
    /// reader knows the request was HMAC-SHA256, and the same for MD5.
    #[test]
    fn an_answer_without_sign_type_is_read_in_the_requests_sign_type() {
        for (signed_as, other) in [(SignType::HmacSha256, SignType::Md5), (SignType::Md5, SignType::HmacSha256)] {
            let mut answer = example();
            sign_answer(&mut answer, KEY, signed_as);
            assert!(!answer.contains_key("sign_type"));
            assert_eq!(verify(&answer, KEY, signed_as), Ok(()));
            assert!(matches!(verify(&answer, KEY, other), Err(Error::SignatureMismatch { .. })));
        }
    }

    #[test]
    fn missing_parameters_are_named() {
        let p = example();
        assert_eq!(require(&p, &["appid", "mch_id"]), Ok(()));
        assert_eq!(require(&p, &["appid", "contract_id"]), Err(Error::Missing("contract_id")));
    }

    #[test]
    fn reads_wechat_pay_xml() {
        let xml = "<xml><return_code><![CDATA[SUCCESS]]></return_code><total_fee>1990</total_fee>\
                   <attach><![CDATA[a & b <c>]]></attach><empty/></xml>";
        let p = from_xml(xml).unwrap();
        assert_eq!(p["return_code"], "SUCCESS");
        assert_eq!(p["total_fee"], "1990");
        assert_eq!(p["attach"], "a & b <c>");
        assert_eq!(p["empty"], "");
        for bad in [
            "<xml><a><b>1</b></a></xml>",
            "<root><a>1</a></root>",
            "<xml><a>1</a><a>2</a></xml>",
            "<!DOCTYPE x [<!ENTITY e \"boom\">]><xml><a>&e;</a></xml>",
            "<xml><a>1</a>",
            "",
            "<xml><return_cod''''Eml<//></xml>",
            "<xml><a x=\"1\">1</a></xml>",
        ] {
            assert!(from_xml(bad).is_err(), "accepted {bad:?}");
        }
    }

    proptest! {
        /// Any input at all is parsed or refused, never a panic: arbitrary text, and XML-like
        /// fragments stitched together.
        #[test]
        fn the_reader_never_panics(
            text in "\\PC{0,200}",
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "<xml>", "</xml>", "<a>", "</a>", "<![CDATA[", "]]>", "&amp;", "&#x41;", "&#0;", "&e;",
                    "<!DOCTYPE x>", "<?xml version=\"1.0\"?>", "<b/>", "<!-- c -->", "x", " ", "<", ">", "&",
                ]),
                0..30,
            ),
        ) {
            let _ = from_xml(&text);
            let _ = from_xml(&parts.concat());
        }

        /// Whatever the values, writing then reading gives the same parameters, and the
        /// signature survives the trip.
        #[test]
        fn xml_round_trips(values in proptest::collection::btree_map("[a-z_]{1,12}", "(\\PC|]]>){0,40}", 0..8)) {
            let mut p: Params = values;
            sign_in_place(&mut p, KEY, SignType::Md5);
            let back = from_xml(&to_xml(&p)).unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert_eq!(verify(&back, KEY, SignType::Md5), Ok(()));
        }
    }
}
