//! WeChat Pay's signing notices (`POST /callbacks/wechatpay/v2/contract`); what a notice does
//! is `app::wechatpay`'s.
use crate::app::signing::Signing;
use crate::app::wechatpay::{NOTIFY_PATH, on_notice};
use autodebit_provider::wechatpay::v2_reply;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;

pub fn routes(signing: Signing) -> axum::Router {
    axum::Router::new().route(NOTIFY_PATH, post(notice)).with_state(signing)
}

async fn notice(State(signing): State<Signing>, body: String) -> Response {
    let (counted, response) = v2_reply("contract", on_notice(&signing, &body).await);
    autodebit_runtime::metrics::add(
        autodebit_runtime::metrics::CALLBACKS,
        &[("kind", "contract"), ("result", counted)],
        1,
    );
    response
}
