//! Analytics' projections end to end: signing sessions taken through the payer's page (signed,
//! abandoned, left open) on two channels, contracts billed on the test clock, a refund, and
//! every question of `AnalyticsService` answered with the numbers those steps make — for the
//! operator, for the merchant, and not for another merchant.
use crate::scenario::{bill_next_period, charge_id, onboard};
use crate::support::{Backend, TestApp, eventually, http_post, path_of};
use autodebit_proto::analytics::v1::{
    ChargeGrouping, ExportFormat, ExportTableRequest, FunnelGrouping, GetChargeStatsRequest, GetNoticeChannelsRequest,
    GetRetentionRequest, GetRevenueRequest, GetSigningBenchmarksRequest, GetSigningFunnelRequest, GetSummaryRequest,
    ListHighValuePayersRequest, TimeRange,
};
use autodebit_proto::charger::v1::{ChargeState, GetChargeRequest, RefundChargeRequest, RefundState};
use autodebit_proto::contracts::v1::{CreateSigningSessionRequest, GetSigningSessionRequest};
use autodebit_proto::events::v1::{Money, SigningChannel};
use autodebit_proto::scheduler::v1::GetScheduleRequest;
use tonic::Code;

both!(the_projections_answer_with_what_happened);

/// Opens a session on `channel` and takes the payer as far as `steps` say: "view", "tick",
/// "confirm", "abandon". The signed contract's id, if it was signed.
pub(crate) async fn session(
    app: &TestApp,
    m: &crate::scenario::Merchant,
    payer: &str,
    channel: SigningChannel,
    steps: &[&str],
) -> String {
    let s = app
        .contracts_as(&m.api_key)
        .create_signing_session(CreateSigningSessionRequest {
            plan_id: m.plan_id.clone(),
            payer_id: payer.into(),
            channel: channel as i32,
            device_id: format!("device-{payer}"),
            client_ip: "192.0.2.10".into(),
            return_url: "https://merchant.example/done".into(),
            ..Default::default()
        })
        .await
        .expect("CreateSigningSession")
        .into_inner()
        .session
        .unwrap();
    let page = path_of(&s.authorization_url);
    let mut code = String::new();
    for step in steps {
        match *step {
            "view" => {
                // An iPhone in WeChat on H5, an Android phone elsewhere.
                let agent = match channel {
                    SigningChannel::H5 => "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) MicroMessenger/8.0",
                    _ => "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36",
                };
                let answer = reqwest::Client::new()
                    .get(format!("http://{}{page}", app.http))
                    .header("User-Agent", agent)
                    .send()
                    .await
                    .expect("GET the page");
                assert_eq!(answer.status().as_u16(), 200);
                let html = answer.text().await.unwrap();
                code = crate::support::element_text(&html, "code-hint").unwrap_or_default();
            }
            "tick" => assert_eq!(http_post(app.http, &format!("{page}/tick"), "agree=yes").await.0, 303),
            "confirm" => {
                assert_eq!(http_post(app.http, &format!("{page}/confirm"), &format!("code={code}")).await.0, 303)
            }
            "abandon" => assert_eq!(http_post(app.http, &format!("{page}/abandon"), "").await.0, 303),
            other => panic!("no step {other}"),
        }
    }
    app.contracts_as(&m.api_key)
        .get_signing_session(GetSigningSessionRequest { session_id: s.session_id })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .contract_id
}

async fn the_projections_answer_with_what_happened(backend: Backend) {
    let app = crate::support::run_on(backend, 0, &["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2ANA0001").await;
    let other = onboard(&ch, "91330100MA2ANA0002").await;

    let signed_h5 = session(&app, &m, "payer-a", SigningChannel::H5, &["view", "tick", "confirm"]).await;
    session(&app, &m, "payer-b", SigningChannel::H5, &["view", "abandon"]).await;
    session(&app, &m, "payer-c", SigningChannel::H5, &[]).await;
    let signed_mini = session(&app, &m, "payer-d", SigningChannel::MiniProgram, &["view", "tick", "confirm"]).await;
    assert!(!signed_h5.is_empty() && !signed_mini.is_empty(), "both sessions signed");

    // A month on: both contracts billed, and both charges succeed (no declines).
    let mut charges = Vec::new();
    for contract in [&signed_h5, &signed_mini] {
        bill_next_period(&ch, contract).await;
    }
    app.settled().await;
    // Every period billed so far, of both (the clock moved for one bills the other too).
    for contract in [&signed_h5, &signed_mini] {
        let s = app
            .scheduler()
            .get_schedule(GetScheduleRequest { contract_id: contract.clone() })
            .await
            .unwrap()
            .into_inner()
            .schedule
            .unwrap();
        charges.extend((1..s.next_period).map(|p| charge_id(contract, p)));
    }
    let n = charges.len() as u64;
    let operator = app.charger();
    let mut amounts = 0;
    for id in &charges {
        let got = eventually("the charge to succeed", 30, || {
            let mut c = operator.clone();
            let id = id.clone();
            async move {
                let got = c.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
                (got.state == ChargeState::Succeeded as i32).then_some(got)
            }
        })
        .await;
        amounts += got.amount.unwrap().minor_units;
    }
    let refund = app
        .charger_as(&m.api_key)
        .refund_charge(RefundChargeRequest {
            charge_id: charges[0].clone(),
            amount: Some(Money { minor_units: 300, currency: "CNY".into() }),
            reason: "asked".into(),
            idempotency_key: "analytics-1".into(),
        })
        .await
        .expect("RefundCharge")
        .into_inner()
        .refund
        .unwrap();
    eventually("the refund to succeed", 30, || {
        let mut c = app.charger_as(&m.api_key);
        let id = refund.refund_id.clone();
        async move {
            let r = c
                .get_refund(autodebit_proto::charger::v1::GetRefundRequest { refund_id: id })
                .await
                .ok()?
                .into_inner()
                .refund?;
            (r.state == RefundState::Succeeded as i32).then_some(())
        }
    })
    .await;
    app.settled().await;
    let mut mine = app.analytics_as(&m.api_key);

    // The funnel: four opened, three viewed, two ticked and signed, one abandoned, and the one
    // left open expired as the month went by.
    let funnel = mine.get_signing_funnel(GetSigningFunnelRequest::default()).await.unwrap().into_inner().rows;
    assert_eq!(funnel.len(), 1, "{funnel:?}");
    let f = &funnel[0];
    assert_eq!(
        (f.opened, f.page_viewed, f.agreement_ticked, f.signed, f.abandoned, f.expired),
        (4, 3, 2, 2, 1, 1),
        "{f:?}"
    );
    assert_eq!(f.median_ms_to_sign, 0, "signed while the test clock stood still");
    let by_channel = mine
        .get_signing_funnel(GetSigningFunnelRequest { group_by: FunnelGrouping::Channel as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let got: Vec<(&str, u64, u64)> = by_channel.iter().map(|r| (r.group.as_str(), r.opened, r.signed)).collect();
    assert_eq!(got, vec![("h5", 3, 1), ("mini_program", 1, 1)]);

    // Charges: every one succeeded, each counted at an hour of the merchant's day.
    let stats = mine.get_charge_stats(GetChargeStatsRequest::default()).await.unwrap().into_inner().rows;
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].charges, stats[0].succeeded, stats[0].success_rate_basis_points), (n, n, 10_000));
    let by_plan = mine
        .get_charge_stats(GetChargeStatsRequest { group_by: ChargeGrouping::Plan as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        by_plan.iter().map(|r| (r.group.as_str(), r.charges)).collect::<Vec<_>>(),
        vec![(m.plan_id.as_str(), n)]
    );
    let by_hour = mine
        .get_charge_stats(GetChargeStatsRequest { group_by: ChargeGrouping::HourOfDay as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(by_hour.iter().all(|r| r.group.len() == 2 && r.group.parse::<u32>().unwrap() < 24), "{by_hour:?}");
    assert_eq!(by_hour.iter().map(|r| r.succeeded).sum::<u64>(), n);

    // Retention: one cohort of two, both still there a month on.
    let cohorts = mine.get_retention(GetRetentionRequest::default()).await.unwrap().into_inner().cohorts;
    assert_eq!(cohorts.len(), 1, "{cohorts:?}");
    assert_eq!(cohorts[0].signed, 2);
    let one = cohorts[0].points.iter().find(|p| p.months == 1).unwrap();
    assert_eq!((one.eligible, one.retained), (2, 2), "{cohorts:?}");
    assert!(cohorts[0].points.iter().find(|p| p.months == 12).unwrap().eligible == 0);

    // Notices: every one recorded was sent on the process log (no channels set up).
    let notices = mine.get_notice_channels(GetNoticeChannelsRequest::default()).await.unwrap().into_inner();
    let log = notices.rows.iter().find(|r| r.channel == "log").expect("notices on the log channel");
    assert!(log.sent >= 4, "signed, pre-debit and succeeded notices: {notices:?}");
    assert_eq!(notices.unsent, 0);

    // Revenue: what the charges took, less the refund; MRR the two contracts' monthly amounts
    // (the plan's one amount each).
    let revenue = mine.get_revenue(GetRevenueRequest::default()).await.unwrap().into_inner().rows;
    assert_eq!(revenue.len(), 1, "{revenue:?}");
    let r = &revenue[0];
    assert_eq!((r.merchant_id.as_str(), r.currency.as_str()), (m.merchant_id.as_str(), "CNY"));
    assert_eq!((r.gross, r.refunds, r.net), (amounts, 300, amounts - 300));
    assert_eq!(r.mrr, 2 * amounts / n as i64, "two monthly contracts of the amount charged each period");

    // The payers who paid most: both signers, each with how they signed.
    let payers = mine.list_high_value_payers(ListHighValuePayersRequest::default()).await.unwrap().into_inner().payers;
    let got: Vec<(&str, &str, &str, u64)> = payers
        .iter()
        .map(|p| (p.payer_id.as_str(), p.signing_channel.as_str(), p.device_kind.as_str(), p.contracts))
        .collect();
    let mut want = vec![("payer-a", "h5", "ios", 1), ("payer-d", "mini_program", "android", 1)];
    want.sort_by_key(|w| got.iter().position(|g| g.0 == w.0));
    assert_eq!(got, want);
    assert_eq!(payers.iter().map(|p| p.paid).sum::<i64>(), amounts);
    assert_eq!(payers[0].path, vec!["page_viewed", "agreement_ticked", "signed"]);
    let err =
        mine.list_high_value_payers(ListHighValuePayersRequest { limit: 101, ..Default::default() }).await.unwrap_err();
    assert!(err.message().starts_with("limit"), "{}", err.message());

    // Signing against the reference figures: per channel and per industry.
    let marks = mine.get_signing_benchmarks(GetSigningBenchmarksRequest::default()).await.unwrap().into_inner();
    let got: Vec<(&str, u64, u32, i64)> = marks
        .channels
        .iter()
        .map(|c| (c.channel.as_str(), c.sessions, c.second_confirmation_basis_points, c.reference_ms_to_sign))
        .collect();
    assert_eq!(got, vec![("h5", 3, 10_000, 48_000), ("mini_program", 1, 10_000, 32_000), ("app", 0, 0, 56_000)]);
    let membership = marks.industries.iter().find(|i| i.industry == "membership").expect("the merchant's industry");
    assert_eq!(
        (
            membership.viewed,
            membership.first_authorization_basis_points,
            membership.reference_first_authorization_basis_points
        ),
        (3, 6_666, 8_200),
        "two of the three viewed signed: {marks:?}"
    );
    assert_eq!(membership.reference_hesitation_ms, 7_200);

    // The summary agrees.
    let summary = mine.get_summary(GetSummaryRequest {}).await.unwrap().into_inner();
    assert_eq!((summary.contracts_active, summary.charges_succeeded), (2, n));

    // A range before anything happened is empty; a range the wrong way round is refused.
    let empty = TimeRange { from_ms: 1, until_ms: 2 };
    let rows = mine
        .get_signing_funnel(GetSigningFunnelRequest { range: Some(empty), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(rows.is_empty(), "{rows:?}");
    let err = mine
        .get_revenue(GetRevenueRequest { range: Some(TimeRange { from_ms: 5, until_ms: 4 }), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("range"), "{}", err.message());

    // Another merchant sees nothing of these, and cannot ask for them; the operator can.
    let mut theirs = app.analytics_as(&other.api_key);
    assert!(theirs.get_revenue(GetRevenueRequest::default()).await.unwrap().into_inner().rows.is_empty());
    assert!(theirs.get_signing_funnel(GetSigningFunnelRequest::default()).await.unwrap().into_inner().rows.is_empty());
    let err = theirs
        .get_charge_stats(GetChargeStatsRequest { merchant_id: m.merchant_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("merchant_id"), "{}", err.message());
    let by_operator = app
        .analytics()
        .get_charge_stats(GetChargeStatsRequest { merchant_id: m.merchant_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(by_operator, stats);
    let all = app
        .analytics()
        .get_charge_stats(GetChargeStatsRequest { group_by: ChargeGrouping::Merchant as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        all.iter().map(|r| (r.group.as_str(), r.charges)).collect::<Vec<_>>(),
        vec![(m.merchant_id.as_str(), n)]
    );

    // Rebuilt from the log while the platform runs, every table comes out as it was, and the
    // answers with it; so does one projection rebuilt alone.
    let url = app.database().replace("mode=ro", "mode=rw");
    let before = tables(&url).await;
    assert!(before.iter().any(|(t, rows)| t == "analytics_signing_sessions" && rows.len() == 4));
    rebuild(&url, &[]);
    app.settled().await;
    assert_eq!(tables(&url).await, before, "a full rebuild");
    rebuild(&url, &["--projection", "charges"]);
    app.settled().await;
    assert_eq!(tables(&url).await, before, "the charges rebuilt alone");
    if matches!(backend, Backend::Postgres) {
        analysts_read_their_schema_only(&url, n).await;
    }
    exports_read_back_by_pyarrow(&url, n, amounts);
    exports_streamed_over_grpc(&app, &url, &m, &other, n).await;
    assert_eq!(mine.get_charge_stats(GetChargeStatsRequest::default()).await.unwrap().into_inner().rows, stats);
    // The live projections go on on the swapped-in tables.
    session(&app, &m, "payer-e", SigningChannel::App, &["view"]).await;
    eventually("the new session projected", 30, || {
        let mut c = app.analytics_as(&m.api_key);
        async move {
            let rows = c.get_signing_funnel(GetSigningFunnelRequest::default()).await.ok()?.into_inner().rows;
            (rows.first()?.opened == 5).then_some(())
        }
    })
    .await;
}

/// Every analytics table's rows, in key order.
/// Every analytics table of the log at `url`, row by row (on SQLite they are in a file of their
/// own beside the log's).
pub(crate) async fn tables(url: &str) -> Vec<(String, Vec<String>)> {
    let url = autodebit_analytics::tables_url(url).unwrap_or_else(|| url.to_string());
    let store = autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(&url)).await.unwrap();
    let mut out = Vec::new();
    for t in autodebit_analytics::rebuild::tables_of(None).unwrap() {
        let rows = store.query(&format!("SELECT * FROM {t} ORDER BY 1, 2"), &[]).await.unwrap();
        out.push((t.to_string(), rows.iter().map(|r| format!("{:?}", r.0)).collect()));
    }
    out
}

/// `autodebit analytics rebuild --database-url URL ARGS`.
pub(crate) fn rebuild(url: &str, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["analytics", "rebuild", "--database-url", url])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run autodebit analytics rebuild");
    assert!(out.status.success(), "analytics rebuild {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilt"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// On PostgreSQL the analyst role reads the `analytics` schema's views (made again by the
/// rebuilds above) and nothing else, and writes nothing.
async fn analysts_read_their_schema_only(url: &str, charges: u64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SET ROLE autodebit_analyst").execute(&mut c).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM analytics.charges WHERE state = 'succeeded'")
        .fetch_one(&mut c)
        .await
        .expect("the analyst reads analytics.charges");
    assert_eq!(n as u64, charges);
    for table in ["analytics.contracts", "analytics.signing_sessions", "analytics.notices", "analytics.merchants"] {
        sqlx::query(&format!("SELECT * FROM {table} LIMIT 1"))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    let denied = sqlx::query("SELECT COUNT(*) FROM events").execute(&mut c).await.unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    let denied = sqlx::query("DELETE FROM analytics.contracts").execute(&mut c).await.unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
}

/// The Python interpreter with pyarrow (`.ci/run` installs it): `$AUTODEBIT_PYTHON`, by default
/// the venv `.ci/run` makes.
fn python() -> String {
    std::env::var("AUTODEBIT_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/autodebit-venv/bin/python", std::env::var("HOME").unwrap_or_default()))
}

/// `autodebit analytics export` of the charges and of the log, as Parquet read back by pyarrow
/// (an implementation independent of the writer) and as CSV: the same numbers as the API's.
fn exports_read_back_by_pyarrow(url: &str, charges: u64, amounts: i64) {
    let dir = tempfile::tempdir().unwrap();
    let export = |table: &str, format: &str, file: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
            .args(["analytics", "export", "--database-url", url, "--table", table, "--format", format, "--out"])
            .arg(dir.path().join(file))
            .env("RUST_LOG", "warn")
            .output()
            .expect("run autodebit analytics export");
        assert!(out.status.success(), "export {table}: {}", String::from_utf8_lossy(&out.stderr));
        dir.path().join(file)
    };
    let parquet = export("charges", "parquet", "charges.parquet");
    let events = export("events", "parquet", "events.parquet");
    let csv = export("charges", "csv", "charges.csv");
    let script = r#"
import json, sys
import pyarrow.parquet as pq
charges = pq.read_table(sys.argv[1]).to_pylist()
events = pq.read_table(sys.argv[2]).to_pylist()
succeeded = [c for c in charges if c["state"] == "succeeded"]
payloads = [json.loads(e["payload"]) for e in events if e["event_type"] == "ChargeSucceeded"]
print(json.dumps({
    "charges": len(charges), "succeeded": len(succeeded), "amount": sum(c["amount"] for c in succeeded),
    "events": len(events), "charge_succeeded_events": len(payloads),
    "a_charge_in_the_log": any(p.get("chargeSucceeded", {}).get("chargeId") == succeeded[0]["charge_id"] for p in payloads),
}))
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&parquet)
        .arg(&events)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run .ci/run, which installs pyarrow", python()));
    assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["charges"], charges, "{got}");
    assert_eq!(got["succeeded"], charges);
    assert_eq!(got["amount"], amounts);
    assert_eq!(got["charge_succeeded_events"], charges, "the log holds each success once");
    assert_eq!(got["a_charge_in_the_log"], true, "{got}");
    assert!(got["events"].as_u64().unwrap() > charges * 3);
    let csv = std::fs::read_to_string(csv).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("charge_id,contract_id,merchant_id,plan_id,"), "{csv}");
    assert_eq!(lines.count() as u64, charges);
}

/// `ExportTable`'s messages, concatenated; the rows the first one counts.
async fn streamed(
    client: &mut autodebit_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient<
        crate::support::Keyed,
    >,
    request: ExportTableRequest,
) -> Result<(Vec<u8>, u64), tonic::Status> {
    let mut stream = client.export_table(request).await?.into_inner();
    let (mut file, mut rows) = (Vec::new(), None);
    while let Some(chunk) = stream.message().await? {
        rows.get_or_insert(chunk.rows);
        file.extend_from_slice(&chunk.data);
    }
    Ok((file, rows.unwrap_or(0)))
}

/// The same exports over gRPC: the operator's CSV is the command line's file byte for byte; a
/// merchant's Parquet holds its own charges (read back by pyarrow); another merchant's holds
/// none of them; the log and the platform's counters are the operator's alone.
async fn exports_streamed_over_grpc(
    app: &TestApp,
    url: &str,
    m: &crate::scenario::Merchant,
    other: &crate::scenario::Merchant,
    charges: u64,
) {
    let dir = tempfile::tempdir().unwrap();
    let cli = dir.path().join("charges.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["analytics", "export", "--database-url", url, "--table", "charges", "--format", "csv", "--out"])
        .arg(&cli)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let request = |table: &str, format: ExportFormat| ExportTableRequest {
        table: table.into(),
        format: format as i32,
        ..Default::default()
    };
    let (csv, rows) = streamed(&mut app.analytics(), request("charges", ExportFormat::Csv)).await.unwrap();
    assert_eq!(rows, charges);
    assert_eq!(csv, std::fs::read(&cli).unwrap(), "the command line's file");

    let (parquet, rows) =
        streamed(&mut app.analytics_as(&m.api_key), request("analytics_charges", ExportFormat::Parquet)).await.unwrap();
    assert_eq!(rows, charges);
    let file = dir.path().join("mine.parquet");
    std::fs::write(&file, &parquet).unwrap();
    let out = std::process::Command::new(python())
        .args(["-c", "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, len(set(t.column('merchant_id').to_pylist())))"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run .ci/run, which installs pyarrow", python()));
    assert!(out.status.success(), "pyarrow: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{charges} 1"));

    let mut theirs = app.analytics_as(&other.api_key);
    let (_, rows) = streamed(&mut theirs, request("charges", ExportFormat::Csv)).await.unwrap();
    assert_eq!(rows, 0, "another merchant's export holds none of these");
    for (table, field) in [("events", "table"), ("counters", "table"), ("nonesuch", "table")] {
        let err = streamed(&mut theirs, request(table, ExportFormat::Csv)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{table}: {err:?}");
        assert!(err.message().starts_with(field), "{table}: {}", err.message());
    }
    let err = streamed(
        &mut theirs,
        ExportTableRequest { merchant_id: m.merchant_id.clone(), ..request("charges", ExportFormat::Csv) },
    )
    .await
    .unwrap_err();
    assert!(err.message().starts_with("merchant_id"), "{}", err.message());
    let (log, rows) = streamed(&mut app.analytics(), request("events", ExportFormat::Csv)).await.unwrap();
    assert!(rows > charges * 3 && log.starts_with(b"position,stream,"), "{rows}");
}
