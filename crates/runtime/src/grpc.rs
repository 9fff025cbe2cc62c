//! gRPC plumbing: one mapping from errors to status codes, the tracing layer, the admin
//! (test clock) service, and a server with health checking and reflection.
use crate::{Component, Platform};
use autodebit_eventstore::StoreError;
use autodebit_proto::admin::v1 as admin;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::{Request, Response, Status};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, GrpcEosErrorsAsFailures, GrpcErrorsAsFailures, GrpcFailureClass,
    MakeClassifier,
};

// === status mapping ===

/// A list call's page size as asked (0: 100), at most `max`, or `page_size`'s error.
pub fn page_size(asked: u32, max: u32) -> Result<i64, Status> {
    if asked > max {
        return Err(invalid("page_size", format!("at most {max}")));
    }
    Ok(i64::from(if asked == 0 { 100 } else { asked }))
}

/// Where a page goes on from: a `<time>:<id>` token a list call gave (`None` for the first
/// page), the id checked by `id_ok`; anything else is `page_token`'s error.
pub fn page_after(token: &str, id_ok: impl Fn(&str) -> bool) -> Result<Option<(i64, String)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "is not a token this call returned");
    let (at, id) = token.split_once(':').ok_or_else(bad)?;
    if !id_ok(id) {
        return Err(bad());
    }
    Ok(Some((at.parse::<i64>().map_err(|_| bad())?, id.to_string())))
}

/// A malformed request: the message starts with the field's name.
pub fn invalid(field: &str, problem: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// Store errors as callers should see them: a version conflict is `ABORTED` (read again and
/// retry); a database failure is `INTERNAL`, with details only in the log.
pub fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        StoreError::Invalid(m) => Status::invalid_argument(m),
        StoreError::Closed => Status::unavailable("the platform is shutting down"),
        StoreError::Batch(m) => {
            tracing::error!(error = %m, "append failed with its batch");
            Status::unavailable("the write failed and may not have been applied; retry with the same idempotency key")
        }
        StoreError::CheckpointMoved(_) => internal(e),
        StoreError::Database(d) => internal(format!("database error: {d}")),
    }
}

/// Any other failure inside a handler: logged under a fresh id, answered as `INTERNAL` with
/// that id alone (no database or internal text reaches a client).
pub fn internal(e: impl Display) -> Status {
    let id = format!("err_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    tracing::error!(error_id = %id, error = %e, "internal error");
    Status::internal(format!("internal error {id}: the platform's log has the details under this id"))
}

/// The HTTP status that answers what a gRPC call would have answered with `code` (the signing
/// pages and callbacks use it).
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as C;
    match code {
        C::Ok => H::OK,
        C::InvalidArgument | C::OutOfRange => H::BAD_REQUEST,
        C::Unauthenticated => H::UNAUTHORIZED,
        C::PermissionDenied => H::FORBIDDEN,
        C::NotFound => H::NOT_FOUND,
        C::AlreadyExists | C::Aborted | C::FailedPrecondition => H::CONFLICT,
        C::ResourceExhausted => H::TOO_MANY_REQUESTS,
        C::Unavailable => H::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded | C::Cancelled => H::GATEWAY_TIMEOUT,
        C::Unimplemented => H::NOT_IMPLEMENTED,
        C::Unknown | C::Internal | C::DataLoss => H::INTERNAL_SERVER_ERROR,
    }
}

// === tracing layer ===

// tower-http's tracing layer for gRPC (in `serve`): a span per call named `grpc` with the
// method (`rpc`), continuing the caller's trace from its `traceparent` header, a debug line when
// the call is answered, and each call counted by method and status code ([`CountCalls`]).

fn call_span<B>(req: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc = %req.uri().path());
    if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        crate::telemetry::set_parent_from_traceparent(&span, tp);
    }
    span
}

fn answered<B>(res: &http::Response<B>, latency: Duration, _: &tracing::Span) {
    let code = res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
    tracing::debug!(code, micros = latency.as_micros() as u64, "rpc done");
}

fn failed(class: GrpcFailureClass, _: Duration, _: &tracing::Span) {
    // A status code was logged with the answer; only a transport error is news here.
    if let GrpcFailureClass::Error(e) = class {
        tracing::debug!(error = %e, "transport error");
    }
}

/// Classifies calls as tower-http does for gRPC, and counts each one in
/// `autodebit_grpc_requests_total` by method and the status code its headers carry.
#[derive(Debug, Clone, Copy)]
struct CountCalls;

#[derive(Clone)]
struct CountedCall {
    rpc: String,
}

impl MakeClassifier for CountCalls {
    type Classifier = CountedCall;
    type FailureClass = GrpcFailureClass;
    type ClassifyEos = GrpcEosErrorsAsFailures;

    fn make_classifier<B>(&self, req: &http::Request<B>) -> CountedCall {
        // Only our own methods become metric labels, so odd paths cannot grow the registry.
        let path = req.uri().path();
        let own = path.starts_with("/autodebit.") || path.starts_with("/grpc.");
        CountedCall { rpc: if own { path.to_string() } else { "other".to_string() } }
    }
}

impl ClassifyResponse for CountedCall {
    type FailureClass = GrpcFailureClass;
    type ClassifyEos = GrpcEosErrorsAsFailures;

    fn classify_response<B>(self, res: &http::Response<B>) -> ClassifiedResponse<GrpcFailureClass, Self::ClassifyEos> {
        let code = res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
        crate::metrics::add(crate::metrics::GRPC_REQUESTS, &[("rpc", &self.rpc), ("code", code)], 1);
        GrpcErrorsAsFailures::new().classify_response(res)
    }

    fn classify_error<E: Display + 'static>(self, error: &E) -> GrpcFailureClass {
        crate::metrics::add(crate::metrics::GRPC_REQUESTS, &[("rpc", &self.rpc), ("code", "transport")], 1);
        GrpcErrorsAsFailures::new().classify_error(error)
    }
}

/// tonic answers a request body it cannot decode as `INTERNAL`; the fault is the caller's.
fn undecodable_is_invalid<R>(mut res: http::Response<R>) -> http::Response<R> {
    let h = res.headers_mut();
    let undecodable = h.get("grpc-status").is_some_and(|v| v == "13")
        && h.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| {
            m.starts_with("failed%20to%20decode%20Protobuf%20message")
                || m.starts_with("failed to decode Protobuf message")
        });
    if undecodable {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    res
}

/// A client interceptor that carries the current trace to the server.
pub fn propagate_trace(mut req: Request<()>) -> Result<Request<()>, Status> {
    if let Some(tp) = crate::telemetry::current_traceparent() {
        if let Ok(v) = tp.parse() {
            req.metadata_mut().insert("traceparent", v);
        }
    }
    Ok(req)
}

// === admin service ===

struct AdminApi {
    platform: Platform,
}

#[tonic::async_trait]
impl admin::admin_service_server::AdminService for AdminApi {
    async fn advance_clock(
        &self,
        req: Request<admin::AdvanceClockRequest>,
    ) -> Result<Response<admin::AdvanceClockResponse>, Status> {
        let secs = req.into_inner().seconds;
        if secs <= 0 {
            return Err(invalid("seconds", "must be positive"));
        }
        if secs > MAX_ADVANCE_SECONDS {
            return Err(invalid("seconds", format!("at most {MAX_ADVANCE_SECONDS} (100 years) at a time")));
        }
        let by = Duration::from_secs(secs as u64);
        let now = self.platform.clock.advance(by).await.map_err(internal)?;
        tracing::info!(seconds = secs, now = %now, "test clock advanced");
        Ok(Response::new(admin::AdvanceClockResponse { now_ms: now.timestamp_millis() }))
    }

    async fn get_clock(&self, _: Request<admin::GetClockRequest>) -> Result<Response<admin::GetClockResponse>, Status> {
        Ok(Response::new(admin::GetClockResponse {
            now_ms: self.platform.clock.now_ms(),
            test_clock: self.platform.clock.is_test(),
        }))
    }
}

/// The furthest one `AdvanceClock` moves the test clock: 100 years.
const MAX_ADVANCE_SECONDS: i64 = 100 * 366 * 86_400;

// === server ===

/// How long one call may take before it is answered `CANCELLED`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `components` on `listener` with health checking, reflection and (with a test clock)
/// the admin service, until the platform shuts down.
/// Calls in flight at once per process when the operator does not say: on PostgreSQL half the
/// connection pool (the followers and workers keep the other half), on SQLite 64 (its one
/// writer queues them anyway).
pub fn default_max_in_flight(store: &autodebit_eventstore::EventStore) -> usize {
    match store.kind() {
        autodebit_eventstore::BackendKind::Postgres => (store.max_connections() as usize / 2).max(2),
        autodebit_eventstore::BackendKind::Sqlite => 64,
    }
}

/// Serves `components` on `listener` with health checking, reflection and (with a test clock)
/// the admin service, until the platform shuts down. At most `max_in_flight` calls run at
/// once; a call that finds no room within [`QUEUE_WAIT`] is shed with `RESOURCE_EXHAUSTED`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    platform: &Platform,
    components: Vec<Component>,
    operator_key: &str,
    max_in_flight: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Reflection lists only what this process serves.
    let mut served: Vec<&'static str> = components.iter().flat_map(|c| c.grpc_names.iter().copied()).collect();
    if platform.clock.is_test() {
        served.push("autodebit.admin.v1.AdminService");
    }
    served.extend(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]);
    let reflection = || {
        served.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(autodebit_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, name| b.with_service_name(*name),
        )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let key_tables: Vec<(&'static str, &'static str)> =
        components.iter().flat_map(|c| c.grpc_names.iter().map(|n| (*n, c.key_table))).collect();
    let auth = crate::auth::AuthLayer::new(&platform.store, operator_key, &key_tables);
    let mut router = axum::Router::new();
    let names: Vec<&'static str> = components.iter().flat_map(|c| c.grpc_names.iter().copied()).collect();
    for name in &names {
        reporter.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
    }
    for c in components {
        router = router.merge(c.routes);
    }
    let mut routes = tonic::service::Routes::from(router)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    if platform.clock.is_test() {
        routes = routes
            .add_service(admin::admin_service_server::AdminServiceServer::new(AdminApi { platform: platform.clone() }));
        reporter.set_service_status("autodebit.admin.v1.AdminService", tonic_health::ServingStatus::Serving).await;
    }
    let shutdown = platform.shutdown.clone();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .timeout(REQUEST_TIMEOUT)
        .layer(
            tower_http::trace::TraceLayer::new(CountCalls)
                .make_span_with(call_span)
                .on_request(())
                .on_response(answered)
                .on_eos(())
                .on_failure(failed),
        )
        .layer(tower::util::MapResponseLayer::new(undecodable_is_invalid))
        .layer(LimitLayer::new(max_in_flight))
        .layer(auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
            shutdown.wait().await;
            for name in names {
                reporter.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
            }
        })
        .await?;
    Ok(())
}

// === load shedding ===

/// How long a call waits for room before it is shed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Bounds the calls in flight: a call waits at most [`QUEUE_WAIT`] for room, then is answered
/// `RESOURCE_EXHAUSTED` with a `grpc-retry-pushback-ms` hint, instead of queueing for a
/// database connection until it times out.
#[derive(Clone)]
pub struct LimitLayer {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl LimitLayer {
    pub fn new(max_in_flight: usize) -> Self {
        LimitLayer { permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))) }
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitService { inner, permits: self.permits.clone() }
    }
}

#[derive(Clone)]
pub struct LimitService<S> {
    inner: S,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl<S, B, R> tower::Service<http::Request<B>> for LimitService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let permits = self.permits.clone();
        Box::pin(async move {
            // gRPC's own health and reflection calls are never shed.
            if req.uri().path().starts_with("/grpc.") {
                return inner.call(req).await;
            }
            match tokio::time::timeout(QUEUE_WAIT, permits.acquire_owned()).await {
                Ok(Ok(permit)) => {
                    let res = inner.call(req).await;
                    drop(permit);
                    res
                }
                _ => {
                    crate::metrics::add(crate::metrics::GRPC_SHED, &[], 1);
                    let mut res = Status::resource_exhausted(
                        "the server is at its limit of calls in flight; retry after the time in grpc-retry-pushback-ms",
                    )
                    .into_http::<R>();
                    res.headers_mut().insert("grpc-retry-pushback-ms", http::HeaderValue::from_static("250"));
                    Ok(res)
                }
            }
        })
    }
}

/// A gRPC service as a router that merges with others (tonic's own `Routes` each carry a
/// fallback, and two fallbacks cannot merge).
pub fn routes_for<S>(svc: S) -> axum::Router
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    use tower::ServiceExt;
    axum::Router::new().route_service(
        &format!("/{}/{{*rest}}", S::NAME),
        svc.map_request(|req: http::Request<axum::body::Body>| req.map(tonic::body::Body::new)),
    )
}
