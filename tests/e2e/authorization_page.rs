//! The authorization page in a real browser: headless Chromium, driven through ChromeDriver's
//! WebDriver API with fantoccini, finds the six required elements and the plan's terms, ticks,
//! confirms, and the contract is signed.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
use crate::{scenario, support};

use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, GetSigningSessionRequest, SigningState,
    contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::SigningChannel;
use fantoccini::{Client, Locator};
use futures::FutureExt;
use scenario::{authed, onboard};
use std::time::Duration;
use support::TestApp;

async fn text(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Waits until an element matching `css` exists (after a form submission reloads the page).
async fn wait_for(b: &Client, css: &str) {
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| {
        panic!("{css} never appeared: {e}");
    });
}

/// What a payer does on the page: reads the terms, ticks, confirms.
async fn sign_on_the_page(b: &Client, url: &str) {
    b.goto(url).await.unwrap();
    // The six things a payer must see.
    assert_eq!(text(b, "#service-name").await, "视频会员");
    assert_eq!(text(b, "#charge-cycle").await, "每月");
    assert_eq!(text(b, "#amount-cap").await, "500.00 CNY");
    assert!(text(b, "#risk-notice").await.contains("解约"));
    assert!(text(b, "#example-charge").await.contains("500.00 CNY"));
    assert_eq!(text(b, "#terms").await, "每月扣款一次，每次不超过 500.00 CNY");
    assert_eq!(text(b, "#customer-service").await, "联系客服");
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(path) = std::env::var("AUTODEBIT_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    // Tick (the page submits the form), then confirm with the credential.
    let code = text(b, "#code-hint").await;
    click(b, "#agree").await;
    wait_for(b, "#agree[checked]").await;
    b.find(Locator::Css("#code")).await.unwrap().send_keys(&code).await.unwrap();
    click(b, "#confirm").await;
    wait_for(b, "#done").await;
}

#[tokio::test]
async fn a_payer_signs_in_headless_chromium() {
    let p = TestApp::spawn(&[]).await;
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
                payer_phone: String::new(),
            },
            &m.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let (driver, browser) = support::browser(profile.path(), (480, 900)).await;
    let signed =
        std::panic::AssertUnwindSafe(sign_on_the_page(&browser, &session.authorization_url)).catch_unwind().await;
    let _ = browser.close().await;
    drop(driver);
    if let Err(panic) = signed {
        std::panic::resume_unwind(panic);
    }

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
