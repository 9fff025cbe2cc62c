//! The notifier's routes on the HTTP listener:
//! - `GET /n/{token}`: a notice's short link. The first visit records `NoticeOpened`; every
//!   visit shows the notice, with the signed link to the payer's own page (`/me/…`, served by
//!   the scheduler), where they see their agreements and charges, end one or complain.
//! - `POST /callbacks/tencent-sms`: Tencent Cloud SMS delivery-status reports, each recorded as
//!   a receipt of the notice it was for (`app::receipts`).
use crate::channels::sms::{STATUS_CALLBACK_ANSWER, parse_status_reports};
use crate::store;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::codec::Cause;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

#[derive(Clone)]
pub struct Http {
    pub platform: Platform,
    pub links: autodebit_runtime::links::PayerLinks,
}

pub fn routes(http: Http) -> axum::Router {
    axum::Router::new()
        .route("/n/{token}", get(open))
        .route("/callbacks/tencent-sms", post(sms_reports))
        .with_state(http)
}

async fn open(State(Http { platform: p, links }): State<Http>, Path(token): Path<String>) -> Response {
    let notice = match store::notice_by_token(&p.store, &token).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, Html("<!doctype html><p>This link is not known.</p>")).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a notice's link failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let now = p.clock.now_ms();
    let recorded = async {
        let mut tx = p.store.begin().await?;
        if store::mark_opened(&mut tx, &notice.notice_id, now).await? {
            let opened = EventKind::NoticeOpened(pb::NoticeOpened {
                notice_id: notice.notice_id.clone(),
                merchant_id: notice.merchant_id.clone(),
                contract_id: notice.contract_id.clone(),
                kind: notice.kind as i32,
                channel: notice.channel.clone(),
                at_ms: now,
            });
            let cause = Cause::request(format!("open/{}", notice.notice_id));
            store::append_to_notice(&mut tx, &notice.notice_id, opened, &cause, now).await?;
        }
        tx.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::error!(error = %e, "recording a notice's opening failed");
    }
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::NOTICE_OPENS, &[], 1);
    let lang = if notice.language == "en" { "en" } else { "zh-CN" };
    let me = format!(
        "{}&lang={}",
        links.path(&notice.merchant_id, &notice.recipient),
        if lang == "en" { "en" } else { "zh" }
    );
    Html(format!(
        "<!doctype html><html lang=\"{lang}\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><main><p id=\"notice\">{}</p><p><a id=\"me\" href=\"{}\">{me_text}</a></p></main></html>",
        autodebit_runtime::links::escape(&notice.text),
        autodebit_runtime::links::escape(&me),
        title = if lang == "en" { "Notice" } else { "通知" },
        me_text = if lang == "en" { "My automatic payments: agreements, charges, ending one" } else { "我的自动扣费：协议、扣费记录、解约" },
    ))
    .into_response()
}

async fn sms_reports(State(Http { platform: p, .. }): State<Http>, body: axum::body::Bytes) -> Response {
    let reports = match parse_status_reports(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let now = p.clock.now_ms();
    let recorded = async {
        for r in reports {
            let detail =
                if r.description.is_empty() { r.code.clone() } else { format!("{}: {}", r.code, r.description) };
            let receipt = crate::store::EarlyReceipt {
                channel: "sms".into(),
                provider_message_id: r.serial_no,
                delivered: i64::from(r.delivered),
                detail,
                at_ms: now,
            };
            crate::app::receipts::receive(&p.store, receipt, now).await?;
        }
        Ok::<_, autodebit_eventstore::StoreError>(())
    };
    match recorded.await {
        Ok(()) => ([(axum::http::header::CONTENT_TYPE, "application/json")], STATUS_CALLBACK_ANSWER).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "recording SMS status reports failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
