//! The authorization page in a real browser: headless Chromium, driven through ChromeDriver's
//! WebDriver API, finds the six required elements and the plan's terms, ticks, confirms, and
//! the contract is signed.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
mod scenario;
mod support;

use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, GetSigningSessionRequest, SigningState,
    contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::SigningChannel;
use scenario::{authed, onboard};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Process;

/// A ChromeDriver process and one browser session in it; both end on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = webdriver(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = std::net::TcpStream::connect(addr).expect("connect to chromedriver");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // ChromeDriver keeps the connection open whatever we ask, so read exactly Content-Length.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let body_start = loop {
        let n = s.read(&mut buf).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..body_start]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length from chromedriver: {head}"));
    while raw.len() < body_start + length {
        let n = s.read(&mut buf).expect("read from chromedriver");
        assert!(n > 0, "chromedriver closed the connection early");
        raw.extend_from_slice(&buf[..n]);
    }
    let json = String::from_utf8_lossy(&raw[body_start..body_start + length]).to_string();
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    if let Some(err) = v["value"].get("error") {
        panic!("chromedriver {method} {path}: {err} {}", v["value"]["message"]);
    }
    v["value"].clone()
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs Debian's chromium-driver (chromedriver on PATH); .ci/run installs it");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=480,900", format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let session = webdriver(addr, "POST", "/session", Some(caps))["sessionId"].as_str().unwrap().to_string();
        Browser { driver, addr, session, _profile: profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        webdriver(self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v.as_object().and_then(|o| o.values().next()).and_then(|id| id.as_str()).unwrap().to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or_default().to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })));
    }

    /// Waits until an element matching `css` exists (after a form submission reloads the page).
    fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
            if found.as_array().is_some_and(|a| !a.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot_png(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        decode_base64(b64.as_str().unwrap())
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(val).collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len().saturating_sub(1))
        })
        .collect()
}

#[tokio::test]
async fn a_payer_signs_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(&["run", "--data-dir", dir.path().to_str().unwrap()]);
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2WEB0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let session = c
        .create_signing_session(authed(
            CreateSigningSessionRequest {
                plan_id: m.plan_id.clone(),
                payer_id: "payer-browser".into(),
                channel: SigningChannel::H5 as i32,
                device_id: "browser-1".into(),
                client_ip: "192.0.2.50".into(),
                return_url: "https://merchant.example/done".into(),
                language: String::new(),
                merchant_contract_code: String::new(),
                idempotency_key: String::new(),
            },
            &m.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();

    let url = session.authorization_url.clone();
    let browser = tokio::task::spawn_blocking(move || {
        let b = Browser::start();
        b.go(&url);
        // The six things a payer must see.
        assert_eq!(b.text("#service-name"), "视频会员");
        assert_eq!(b.text("#charge-cycle"), "每月");
        assert_eq!(b.text("#amount-cap"), "500.00 CNY");
        assert!(b.text("#risk-notice").contains("解约"));
        assert!(b.text("#example-charge").contains("500.00 CNY"));
        assert_eq!(b.text("#terms"), "每月扣款一次，每次不超过 500.00 CNY");
        assert_eq!(b.text("#customer-service"), "联系客服");
        let png = b.screenshot_png();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Ok(path) = std::env::var("AUTODEBIT_SCREENSHOT") {
            std::fs::write(path, &png).unwrap();
        }
        // Tick (the page submits the form), then confirm with the credential.
        let code = b.text("#code-hint");
        b.click("#agree");
        b.wait_for("#agree[checked]");
        b.type_into("#code", &code);
        b.click("#confirm");
        b.wait_for("#done");
        b
    })
    .await
    .unwrap();
    drop(browser);

    let done = c
        .get_signing_session(authed(GetSigningSessionRequest { session_id: session.session_id.clone() }, &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(done.state, SigningState::Confirmed as i32);
    assert!(done.contract_id.starts_with("ct_"));
}
