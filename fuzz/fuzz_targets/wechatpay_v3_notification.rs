//! WeChat Pay v3 callbacks arrive as JSON from outside: the envelope reader must accept or
//! refuse any bytes without panicking, and opening an accepted one must fail cleanly.
#![no_main]
use autodebit_provider::wechatpay::v3::Notification;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Notification::parse(data) {
        let _ = n.open("0123456789abcdef0123456789abcdef");
    }
});
