//! WeChat Pay v2 callbacks and answers arrive as XML from outside: the reader must parse or
//! refuse any bytes without panicking, and what it accepts must survive a write and re-read.
#![no_main]
use autodebit_provider::wechatpay::v2;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(params) = v2::from_xml(text) {
        let again = v2::from_xml(&v2::to_xml(&params)).expect("what was read is written readably");
        assert_eq!(again, params);
        let _ = v2::verify(&params, "192006250b4c09247ec02edce69f6a2d", v2::SignType::HmacSha256);
    }
});
