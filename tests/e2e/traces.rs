//! One charge, one trace: the real binary exports its spans over OTLP to a collector run in
//! this test, and a charge triggered by a caller that sends its own `traceparent` is followed
//! from the call through the log to the charger's follower, the attempt, the provider call,
//! and the notifier's follower. Each span's parent is checked, not just its presence.
use crate::{scenario, support};

use autodebit_proto::events::v1::{ChargeMode, Cycle, Money};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, TriggerChargeRequest, TriggerOutcome, scheduler_service_client::SchedulerServiceClient,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use scenario::{authed, create_plan, onboard, sign_on};
use std::sync::{Arc, Mutex};
use support::{Process, eventually};

/// The caller's trace and span, as its `traceparent` names them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    })
}

#[tokio::test]
async fn a_triggered_charge_is_one_trace_from_the_call_to_the_notifier() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let serving = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{otlp}");
    let p = Process::start_with_env(
        &["run", "--data-dir", dir.path().to_str().unwrap(), "--test-clock", "--charge-window", "00:00-24:00"],
        &[("RUST_LOG", "info"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2TRACE01").await;
    let rides = create_plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let contract = sign_on(&ch, &m, &rides, "payer-traced", 50_000, Cycle::Monthly).await;
    let mut scheduler = SchedulerServiceClient::new(ch.clone());
    eventually("the schedule", 30, || {
        let mut s = scheduler.clone();
        let request = authed(GetScheduleRequest { contract_id: contract.clone() }, &m.api_key);
        async move { s.get_schedule(request).await.ok() }
    })
    .await;
    p.caught_up().await;

    let mut request = authed(
        TriggerChargeRequest {
            contract_id: contract.clone(),
            amount: Some(Money { minor_units: 350, currency: "CNY".into() }),
            reason: "ride ended".into(),
            idempotency_key: "traced-ride".into(),
        },
        &m.api_key,
    );
    request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap());
    let triggered = scheduler.trigger_charge(request).await.unwrap().into_inner();
    assert_eq!(triggered.outcome, TriggerOutcome::Scheduled as i32);

    // Every span of the trace, once the notifier's follower has taken in the outcome.
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let spans = eventually("the charge's spans at the collector", 60, || async {
        let spans: Vec<Span> = collector.0.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        let notified = spans.iter().any(|s| {
            s.name == "follow"
                && attribute(s, "follower").as_deref() == Some("notifier.notices")
                && spans.iter().any(|a| a.name == "charge_attempt" && a.span_id == s.parent_span_id)
        });
        notified.then_some(spans)
    })
    .await;
    let named = |name: &str, key: &str, value: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
            .unwrap_or_else(|| panic!("no {name} span with {key}={value} in {:#?}", names(&spans)))
    };
    let call = named("grpc", "rpc", "/autodebit.scheduler.v1.SchedulerService/TriggerCharge");
    assert_eq!(hex::encode(&call.parent_span_id), CALLER_SPAN, "the call continues the caller's span");
    let started = named("follow", "follower", "charger.charges");
    assert_eq!(started.parent_span_id, call.span_id, "the charger's follower continues the call");
    let attempt = spans.iter().find(|s| s.name == "charge_attempt").expect("the attempt's span");
    assert_eq!(attempt.parent_span_id, call.span_id, "the attempt continues the charge's scheduling");
    let provider = named("provider", "call", "charge");
    assert_eq!(provider.parent_span_id, attempt.span_id, "the provider call is the attempt's");
    assert_eq!(attribute(provider, "provider").as_deref(), Some("simulator"));
    // Every span of the trace hangs from the caller's span, through parents in the trace.
    for s in &spans {
        let mut at = s;
        let mut hops = 0;
        while hex::encode(&at.parent_span_id) != CALLER_SPAN {
            at = spans
                .iter()
                .find(|p| p.span_id == at.parent_span_id)
                .unwrap_or_else(|| panic!("{} has a parent outside the trace: {:#?}", s.name, names(&spans)));
            hops += 1;
            assert!(hops < 20, "a cycle of parents");
        }
    }
}

/// Each span as `name (parent → id)`, for failure messages.
fn names(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            let what = ["rpc", "follower", "call"].iter().find_map(|k| attribute(s, k)).unwrap_or_default();
            format!("{} {what} ({} → {})", s.name, hex::encode(&s.parent_span_id), hex::encode(&s.span_id))
        })
        .collect()
}
