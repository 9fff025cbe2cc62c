//! What the end-to-end tests share: the platform in-process (`TestApp`) or the real
//! `autodebit` binary (`Process`), each on port 0 with a database of its own and stopped when
//! its handle drops; raw gRPC calls, HTTP requests, polling.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod app;
pub use app::{Keyed, TestApp};

pub struct Process {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Where its log is: `--database-url`, or the SQLite file in `--data-dir`.
    database: String,
    /// Whether it runs every service (`run`), and so every follower.
    all_in_one: bool,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `autodebit ARGS` and waits for its "listening" line.
    pub fn start(args: &[&str]) -> Process {
        Process::start_at(args, "127.0.0.1:0")
    }

    /// Starts `autodebit ARGS` with its HTTP listener at `http` (a restarted process keeps
    /// the address its callbacks were sent to).
    pub fn start_at(args: &[&str], http: &str) -> Process {
        Process::spawn(args, http, &[("RUST_LOG", "warn")], Stdio::inherit())
    }

    /// Starts `autodebit ARGS` logging at `level` (`RUST_LOG`) to the end of the file `log`.
    pub fn start_logged(args: &[&str], level: &str, log: &std::path::Path) -> Process {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the log file");
        Process::spawn(args, "127.0.0.1:0", &[("RUST_LOG", level)], Stdio::from(file))
    }

    /// Starts `autodebit ARGS` with the environment variables `env` (`RUST_LOG` among them).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Process {
        Process::spawn(args, "127.0.0.1:0", env, Stdio::inherit())
    }

    fn spawn(args: &[&str], http: &str, env: &[(&str, &str)], stderr: Stdio) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autodebit"))
            .args(args)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", http, "--operator-key", OPERATOR])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the autodebit binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("autodebit {args:?} did not report its listeners within 60 s")
        });
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .parse()
                .expect("a socket address")
        };
        let arg = |name: &str| args.iter().position(|a| *a == name).and_then(|i| args.get(i + 1)).copied();
        let database = match (arg("--database-url"), arg("--data-dir")) {
            (Some(url), _) => url.to_string(),
            (None, dir) => format!("sqlite://{}/autodebit.db?mode=ro", dir.unwrap_or("autodebit-data")),
        };
        Process { grpc: field("grpc"), http: field("http"), child, database, all_in_one: args.first() == Some(&"run") }
    }

    /// Waits until every follower has taken in the whole log: each one's checkpoint at or past
    /// the log's head, and the head still there once they are (followers append effects in
    /// the transaction that moves their checkpoint, so a head that stays put has nothing
    /// behind it). Use before asserting that something did *not* happen.
    pub async fn caught_up(&self) {
        wait_caught_up(&self.database, self.all_in_one).await;
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.expect("connect to gRPC")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "autodebit did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until every follower of the log in `database` has taken in the whole log (see
/// `Process::caught_up`); `all_in_one`: every service runs, so a follower without a checkpoint
/// is behind.
pub(crate) async fn wait_caught_up(database: &str, all_in_one: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (head, behind) = followers_behind(database, all_in_one).await;
        if behind.is_empty() && followers_behind(database, all_in_one).await.0 == head {
            return;
        }
        assert!(Instant::now() < deadline, "followers {behind:?} did not reach the log's head {head:?} within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log's head as (transaction id, position) — the order followers read in — and the
/// followers whose checkpoint is before it.
async fn followers_behind(database: &str, all_in_one: bool) -> ((i64, i64), Vec<String>) {
    use sqlx::Connection;
    let (head, checkpoints): (Option<(i64, i64)>, Vec<(String, i64, i64)>) = if database.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(database).await.expect("open the SQLite log");
        let head = sqlx::query_as("SELECT 0, position FROM events ORDER BY position DESC LIMIT 1")
            .fetch_optional(&mut db)
            .await
            .expect("the log's head");
        let mut checkpoints: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT consumer, transaction_id, position FROM consumer_checkpoints")
                .fetch_all(&mut db)
                .await
                .expect("the checkpoints");
        // The analytics projector keeps its checkpoint with its tables, in a file of their own.
        if let Some(tables) = autodebit_analytics::tables_url(database)
            && let Ok(mut t) = sqlx::SqliteConnection::connect(&tables).await
        {
            let theirs: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT consumer, transaction_id, position FROM consumer_checkpoints")
                    .fetch_all(&mut t)
                    .await
                    .unwrap_or_default();
            checkpoints.retain(|(c, _, _)| !theirs.iter().any(|(t, _, _)| t == c));
            checkpoints.extend(theirs);
        }
        (head, checkpoints)
    } else {
        let mut db = sqlx::PgConnection::connect(database).await.expect("open the PostgreSQL log");
        let head = sqlx::query_as(
            "SELECT transaction_id::text::bigint, position FROM events
                 ORDER BY transaction_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(&mut db)
        .await
        .expect("the log's head");
        let checkpoints = sqlx::query_as("SELECT consumer, transaction_id, position FROM consumer_checkpoints")
            .fetch_all(&mut db)
            .await
            .expect("the checkpoints");
        (head, checkpoints)
    };
    let head = head.unwrap_or((0, 0));
    let mut behind: Vec<String> = checkpoints
        .iter()
        .filter(|(_, transaction_id, position)| (*transaction_id, *position) < head)
        .map(|(consumer, _, _)| consumer.clone())
        .collect();
    // A follower that never saved a checkpoint is at the start of the log.
    if all_in_one && head > (0, 0) {
        behind.extend(FOLLOWERS.iter().filter(|f| !checkpoints.iter().any(|(c, _, _)| c == *f)).map(|f| f.to_string()));
    }
    (head, behind)
}

/// Bytes in, bytes out: requests are encoded by hand from the reflected descriptors.
#[derive(Default)]
pub struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` (`/package.Service/Method`) with `body` as it is, as `key` (none: no
/// authorization header).
pub async fn call_raw(ch: &Channel, path: &str, body: Vec<u8>, key: Option<&str>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(body);
    if let Some(k) = key {
        req.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    grpc.unary(req, path.parse().unwrap(), Raw).await.map(|r| r.into_inner())
}

/// The services `ch` lists through gRPC server reflection.
pub async fn listed_services(ch: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("reflection did not list services: {other:?}"),
    }
}

/// The followers of `autodebit run`, by the names their checkpoints are kept under.
const FOLLOWERS: &[&str] = &[
    "scheduler.contracts",
    "charger.charges",
    "charger.provider_notices",
    "charger.keys",
    "contracts.charge_outcomes",
    "notifier.notices",
    "analytics.projections",
    "notifier.keys",
    "analytics.keys",
];

/// Polls `check` until it returns `Some`, failing the test after `secs` seconds.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client that leaves redirects to the test (the pages answer 303 and tests check it).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

/// A GET of `path` at `addr`; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = http_client().get(format!("http://{addr}{path}")).send().await.expect("GET");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("the body"))
}

/// A POST of a form to `path` at `addr`; returns (status, headers and body).
pub async fn http_post(addr: SocketAddr, path: &str, form: &str) -> (u16, String) {
    http_post_with(addr, path, &[("Content-Type", "application/x-www-form-urlencoded".into())], form).await
}

/// A POST of `body` with `headers` to `path` at `addr`; returns (status, headers and body),
/// the headers one `name: value` line each, then an empty line, then the body.
pub async fn http_post_with(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    let mut request = http_client().post(format!("http://{addr}{path}")).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = request.send().await.expect("POST");
    let status = answer.status().as_u16();
    let head: String =
        answer.headers().iter().map(|(k, v)| format!("{k}: {}\r\n", String::from_utf8_lossy(v.as_bytes()))).collect();
    (status, format!("{head}\r\n{}", answer.text().await.expect("the body")))
}

/// A file of the mock WeChat Pay's test keys and certificates (`crates/mock-wechatpay/testdata`).
pub fn mock_testdata(name: &str) -> String {
    format!("{}/crates/mock-wechatpay/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A local port free when asked (bound and let go): nothing listens there until a test does.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The path (and query) of an absolute URL.
pub fn path_of(url: &str) -> String {
    url.split_once("://").map(|(_, rest)| rest[rest.find('/').unwrap()..].to_string()).unwrap()
}

/// The value of the series `key` (name and labels as exposed) in a `/metrics` text; 0 if absent.
pub fn metric(metrics: &str, key: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

/// The text of the element with `id` in an HTML page (between its tag's `>` and the next `<`).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = at + html[at..].find('>')? + 1;
    let end = start + html[start..].find('<')?;
    Some(html[start..end].to_string())
}

/// The two deployments a black-box scenario runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The platform in-process on `backend` (SQLite in a temporary directory, or a fresh
/// PostgreSQL database), declining as asked, with `extra` options as `autodebit run` takes them.
pub async fn run_on(backend: Backend, decline_basis_points: u32, extra: &[&str]) -> TestApp {
    let decline = decline_basis_points.to_string();
    TestApp::builder().backend(backend).args(&["--decline-basis-points", &decline]).args(extra).spawn().await
}

/// One test per scenario and backend: `both!(a, b)` makes `on_sqlite::a`, `on_postgres::a`, …
/// calling `a(Backend)`; the test file imports `Backend`.
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )* }
    };
}

/// `autodebit mock-wechatpay ARGS` on port 0, killed when dropped; `.1` is where it listens.
pub struct MockWechatpay(Child, pub SocketAddr);

impl Drop for MockWechatpay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl MockWechatpay {
    /// The mock's default account's APIv2 and APIv3 keys.
    pub const API_V2_KEY: &'static str = "192006250b4c09247ec02edce69f6a2d";
    pub const API_V3_KEY: &'static str = "test-apiv3-key-0123456789abcdef0";

    /// Writes to `path` a `--wechatpay-config` that points `merchant_id` at this mock's default
    /// account (its APIv2 and APIv3 keys, the test merchant key and platform public key), with
    /// results notified to `notify_url`.
    pub fn write_config(&self, path: &std::path::Path, merchant_id: &str, notify_url: &str) {
        let account = serde_json::json!({"merchants": [{
            "merchant_id": merchant_id,
            "appid": "wxd930ea5d5a258f4f",
            "mch_id": "10000100",
            "api_v2_key": Self::API_V2_KEY,
            "base_url": format!("http://{}", self.1),
            "notify_url": notify_url,
            "spbill_create_ip": "127.0.0.1",
            "v3": {
                "merchant_serial": autodebit_mock_wechatpay::MERCHANT_SERIAL,
                "merchant_private_key_file": mock_testdata("merchant_test_key.pem"),
                "api_v3_key": Self::API_V3_KEY,
                "platform_public_key_id": autodebit_mock_wechatpay::PLATFORM_KEY_ID,
                "platform_public_key_file": mock_testdata("platform_test_pub.pem"),
            },
        }]});
        std::fs::write(path, account.to_string()).expect("write the WeChat Pay configuration");
    }

    pub fn start(args: &[&str]) -> MockWechatpay {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autodebit"))
            .args(["mock-wechatpay", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("its first line");
        let addr = line.trim().rsplit_once("http=").expect("the listening line").1.parse().expect("an address");
        MockWechatpay(child, addr)
    }
}

/// The operator key every test process is started with.
pub const OPERATOR: &str = "test-operator-key";

/// A request carrying `key` as its bearer credential.
pub fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

/// A request made with the operator key (the operator reads everything and moves the test
/// clock).
pub fn op<T>(message: T) -> tonic::Request<T> {
    authed(message, OPERATOR)
}

/// A ChromeDriver process; it ends on drop.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts ChromeDriver and opens a headless Chromium session in it, with a profile in `profile`
/// and a window of `width` × `height`. Needs Debian's `chromium` and `chromium-driver`.
pub async fn browser(profile: &std::path::Path, (width, height): (u32, u32)) -> (Driver, fantoccini::Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Driver)
        .expect("this test needs Debian's chromium-driver (chromedriver on PATH); .ci/run installs it");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--window-size={width},{height}"), format!("--user-data-dir={}", profile.display())]
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    // ChromeDriver listens on loopback over plain HTTP.
    let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a ChromeDriver session");
    (driver, client)
}
