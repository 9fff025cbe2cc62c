//! One delivery try: a signed POST to the endpoint's URL.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use reqwest::redirect::Policy;

use super::sign::{Secret, sign};
use super::url::{SafeResolver, check_url};

/// How long one try may take, connecting and answering included.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The most bytes of an answer that are read.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// The most characters of an error kept on a try.
const MAX_ERROR_CHARS: usize = 300;

/// The most characters of a non-2xx answer's body quoted in its error.
const MAX_QUOTED_CHARS: usize = 200;

const AGENT: &str = concat!("autodebit-webhooks/", env!("CARGO_PKG_VERSION"));

/// Sends webhook deliveries. Cheap to clone: the clones share one HTTP client, and with it its
/// connections.
///
/// The client resolves names through [`SafeResolver`], follows no redirects (a 3xx answer is a
/// failed try, as the specification advises), uses no proxy, gives up after 15 s and says
/// `User-Agent: autodebit-webhooks/<version>`.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_loopback: bool,
}

/// The outcome of one try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The answer's HTTP status; 0 when there was no answer.
    pub status: u16,
    /// What went wrong, briefly, for the delivery log (never a secret): the refused URL, the
    /// connection error, or a non-2xx status with the start of the answer's body.
    pub error: Option<String>,
    /// The endpoint answered 2xx.
    pub succeeded: bool,
}

impl Attempt {
    fn failed(error: String) -> Attempt {
        Attempt { status: 0, error: Some(error), succeeded: false }
    }
}

impl WebhookSender {
    /// A sender; `allow_loopback` lets it post to loopback addresses, over plain HTTP too (for
    /// tests and local development only). Fails only if the TLS backend cannot start.
    pub fn new(allow_loopback: bool) -> Result<WebhookSender, reqwest::Error> {
        WebhookSender::with_resolver(allow_loopback, SafeResolver::new(allow_loopback))
    }

    /// A sender whose URL checks allow loopback as `allow_loopback` says, resolving through
    /// `resolver`; apart from [`WebhookSender::new`], only tests give the two different rules.
    fn with_resolver(allow_loopback: bool, resolver: SafeResolver) -> Result<WebhookSender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .redirect(Policy::none())
            .no_proxy()
            .https_only(!allow_loopback)
            .timeout(TIMEOUT)
            .build()?;
        Ok(WebhookSender { client, allow_loopback })
    }

    /// Posts `payload` (JSON) to `url`, signed with `secret` for `msg_id` at `timestamp_secs`,
    /// with the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers. Reads at
    /// most 4 KiB of the answer. A URL that [`check_url`] refuses, including one whose host is
    /// a refused IP address (such hosts never reach the resolver), is not contacted.
    pub async fn send(&self, url: &str, msg_id: &str, timestamp_secs: i64, payload: &str, secret: &Secret) -> Attempt {
        let url = match check_url(url, self.allow_loopback) {
            Ok(url) => url,
            Err(e) => return Attempt::failed(format!("url: {e}")),
        };
        let signature = sign(secret, msg_id, timestamp_secs, payload);
        let sent = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, AGENT)
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp_secs.to_string())
            .header("webhook-signature", signature)
            .body(payload.to_owned())
            .send()
            .await;
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(e) => return Attempt::failed(describe(e)),
        };
        let status = answer.status();
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER_BYTES {
            match answer.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - body.len())]),
                // The status decides the try; a body cut short changes nothing.
                Ok(None) | Err(_) => break,
            }
        }
        let succeeded = status.is_success();
        let error = (!succeeded).then(|| {
            let mut text = format!("HTTP {status}");
            let quoted = quote(&body);
            if !quoted.is_empty() {
                text.push_str(": ");
                text.push_str(&quoted);
            }
            text
        });
        Attempt { status: status.as_u16(), error, succeeded }
    }
}

/// A reqwest error as one line: what failed and, through its causes, why; without the URL.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    let e = e.without_url();
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        // hyper and reqwest at times repeat the inner message in the outer one.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    truncate(&parts.join(": "), MAX_ERROR_CHARS)
}

/// The start of an answer's body, on one line.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, MAX_QUOTED_CHARS)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::sign::{derive, verify};
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::sync::Mutex;

    type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

    /// A receiver on 127.0.0.1 that records what it is sent: `/ok` answers 204, `/fail` 500
    /// with a long body, `/moved` a redirect to `/ok`, `/big` 200 with a megabyte of body.
    async fn receiver() -> (String, Received) {
        let received: Received = Arc::default();
        let record = |answer: fn() -> axum::response::Response| {
            let received = received.clone();
            move |headers: HeaderMap, body: String| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push((headers, body));
                    answer()
                }
            }
        };
        use axum::response::IntoResponse;
        let app = Router::new()
            .route("/ok", post(record(|| StatusCode::NO_CONTENT.into_response())))
            .route(
                "/fail",
                post(record(|| {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("db down\n\t{}", "x".repeat(5000))).into_response()
                })),
            )
            .route("/moved", post(record(|| (StatusCode::FOUND, [("location", "/ok")]).into_response())))
            .route("/big", post(record(|| (StatusCode::OK, "y".repeat(1 << 20)).into_response())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, received)
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }

    #[tokio::test]
    async fn a_delivery_arrives_signed_and_verifies() {
        let (base, received) = receiver().await;
        let sender = WebhookSender::new(true).unwrap();
        let secret = derive(b"platform key", "ep_1", 0);
        let payload = r#"{"type":"charge.succeeded","data":{"charge_id":"ch_1"}}"#;
        let t = 1_700_000_000;

        let attempt = sender.send(&format!("{base}/ok"), "msg_1", t, payload, &secret).await;
        assert_eq!(attempt, Attempt { status: 204, error: None, succeeded: true });

        let got = received.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let (h, body) = &got[0];
        assert_eq!(body, payload);
        assert_eq!(header(h, "content-type"), "application/json");
        assert_eq!(header(h, "user-agent"), format!("autodebit-webhooks/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(header(h, "webhook-id"), "msg_1");
        assert_eq!(header(h, "webhook-timestamp"), "1700000000");
        let signature = header(h, "webhook-signature");
        assert_eq!(
            verify(&secret, header(h, "webhook-id"), header(h, "webhook-timestamp"), signature, body, t + 5, 300),
            Ok(())
        );
        // Under another generation's secret it does not verify.
        let rotated = derive(b"platform key", "ep_1", 1);
        assert!(verify(&rotated, "msg_1", "1700000000", signature, body, t, 300).is_err());
    }

    #[tokio::test]
    async fn localhost_by_name_goes_through_the_resolver_when_loopback_is_allowed() {
        let (base, received) = receiver().await;
        let url = base.replace("127.0.0.1", "localhost");
        let attempt =
            WebhookSender::new(true).unwrap().send(&format!("{url}/ok"), "msg_2", 1, "{}", &derive(b"k", "e", 0)).await;
        assert!(attempt.succeeded, "{attempt:?}");
        assert_eq!(received.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn non_2xx_answers_fail_and_quote_the_start_of_the_body() {
        let (base, _) = receiver().await;
        let sender = WebhookSender::new(true).unwrap();
        let secret = derive(b"k", "e", 0);
        let attempt = sender.send(&format!("{base}/fail"), "m", 1, "{}", &secret).await;
        assert_eq!(attempt.status, 500);
        assert!(!attempt.succeeded);
        let error = attempt.error.unwrap();
        assert!(error.starts_with("HTTP 500 Internal Server Error: db down xxxx"), "{error}");
        assert!(error.chars().count() <= "HTTP 500 Internal Server Error: ".len() + MAX_QUOTED_CHARS + 1, "{error}");

        let attempt = sender.send(&format!("{base}/missing"), "m", 1, "{}", &secret).await;
        assert_eq!((attempt.status, attempt.succeeded), (404, false));
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (base, received) = receiver().await;
        let attempt =
            WebhookSender::new(true).unwrap().send(&format!("{base}/moved"), "m", 1, "{}", &derive(b"k", "e", 0)).await;
        assert_eq!((attempt.status, attempt.succeeded), (302, false));
        assert_eq!(attempt.error.as_deref(), Some("HTTP 302 Found"));
        assert_eq!(received.lock().unwrap().len(), 1, "only /moved was called");
    }

    #[tokio::test]
    async fn a_large_answer_is_read_only_in_part() {
        let (base, _) = receiver().await;
        let attempt =
            WebhookSender::new(true).unwrap().send(&format!("{base}/big"), "m", 1, "{}", &derive(b"k", "e", 0)).await;
        assert_eq!(attempt, Attempt { status: 200, error: None, succeeded: true });
    }

    #[tokio::test]
    async fn loopback_is_refused_unless_allowed() {
        let (base, received) = receiver().await;
        let port = base.rsplit(':').next().unwrap();
        let sender = WebhookSender::new(false).unwrap();
        let secret = derive(b"k", "e", 0);
        let cases = [
            (format!("http://127.0.0.1:{port}/ok"), "url: address 127.0.0.1 is private, loopback or reserved"),
            (format!("https://127.0.0.1:{port}/ok"), "url: address 127.0.0.1 is private, loopback or reserved"),
            (format!("https://[::ffff:127.0.0.1]:{port}/ok"), "url: address ::ffff:127.0.0.1 is private"),
            (format!("http://localhost:{port}/ok"), "url: host localhost is a loopback name"),
            (format!("https://localhost:{port}/ok"), "url: host localhost is a loopback name"),
            (format!("https://10.0.0.1:{port}/ok"), "url: address 10.0.0.1 is private"),
        ];
        for (url, want) in cases {
            let attempt = sender.send(&url, "m", 1, "{}", &secret).await;
            assert_eq!((attempt.status, attempt.succeeded), (0, false), "{url}");
            let error = attempt.error.unwrap();
            assert!(error.starts_with(want), "{url}: {error}");
        }
        assert!(received.lock().unwrap().is_empty(), "nothing reached the receiver");
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_not_contacted() {
        // The URL rules let `localhost` through, as they would a public name that resolved to a
        // public address when the endpoint was created; the resolver, asked at sending time,
        // finds only loopback and refuses.
        let (base, received) = receiver().await;
        let url = format!("{}/ok", base.replace("127.0.0.1", "localhost"));
        let sender = WebhookSender::with_resolver(true, SafeResolver::new(false)).unwrap();
        let attempt = sender.send(&url, "m", 1, "{}", &derive(b"k", "e", 0)).await;
        assert_eq!((attempt.status, attempt.succeeded), (0, false));
        let error = attempt.error.unwrap();
        assert!(
            error.contains("host localhost resolves to ")
                && error.ends_with("which is private, loopback or reserved; endpoints must have public addresses"),
            "{error}"
        );
        assert!(received.lock().unwrap().is_empty(), "nothing reached the receiver");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_short_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/ok?token=abc");
        let attempt = WebhookSender::new(true).unwrap().send(&url, "m", 1, "{}", &derive(b"k", "e", 0)).await;
        assert_eq!((attempt.status, attempt.succeeded), (0, false));
        let error = attempt.error.unwrap();
        assert!(error.starts_with("error sending request"), "{error}");
        assert!(error.ends_with("Connection refused (os error 111)"), "{error}");
        assert!(!error.contains("token=abc"), "the URL is left out: {error}");
        assert!(error.chars().count() <= MAX_ERROR_CHARS + 1, "{error}");
    }
}
