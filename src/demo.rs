//! `autodebit demo`: the platform in-process on a test clock, N contracts, D days. The same
//! seed gives the same report (but for its wall time): the clock starts on the next 1 July,
//! the merchant and the contracts are named after the seed, and the simulator draws from it.
use crate::platform::{self, ListenArgs, PlatformArgs, Service};
use anyhow::{Context, bail};
use autodebit_eventstore::{EventStore, StoreOptions};
use autodebit_proto::admin::v1::{AdvanceClockRequest, GetClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{
    GetSummaryRequest, GetSummaryResponse, analytics_service_client::AnalyticsServiceClient,
};
use autodebit_proto::charger::v1::{
    GetRefundRequest, ReconcileStatementRequest, RefundState, charger_service_client::ChargerServiceClient,
    reconciliation_service_client::ReconciliationServiceClient,
};
use autodebit_proto::contracts::v1::{SignContractRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{Cycle, Money};
use autodebit_proto::scheduler::v1::{GetSchedulerStatusRequest, scheduler_service_client::SchedulerServiceClient};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Contracts to sign.
    #[arg(long, default_value_t = 1000)]
    contracts: u32,
    /// Days to advance the test clock, one day at a time.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Run on this database (it must hold no events) instead of SQLite in a temporary directory.
    #[arg(long, conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// Keep the demo's SQLite database in this directory (as `autodebit run --data-dir` keeps
    /// its own), to explore and export afterwards; it must hold no events yet.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The same seed, the same report.
    #[arg(long, alias = "simulator-seed", default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    decline_basis_points: u32,
    /// How long to wait for every charge to reach an outcome after the last day.
    #[arg(long, default_value_t = 300)]
    settle_timeout_secs: u64,
    /// Makes the simulator's daily statements disagree with the books: each day's leaves out a
    /// debit (a short payment), shows a declined attempt as paid (a status mismatch) and debits
    /// a charge twice (a duplicate, refunded at once).
    #[arg(long)]
    discrepancies: bool,
    /// Adds six pay-per-ride contracts whose outsized rides the charge-time rule holds: two
    /// confirmed by their payer, two approved and one rejected by an operator, one left to
    /// lapse after 48 hours.
    #[arg(long)]
    anomalies: bool,
    /// Files a complaint of each kind on day 31's charges: the unauthorized charge refunded and
    /// the "other" one rejected at once, the amount dispute answered late, the service not
    /// delivered never (each missed deadline brings its penalty).
    #[arg(long)]
    complaints: bool,
}

#[derive(serde::Serialize)]
struct Report {
    contracts_signed: u64,
    charges_scheduled: u64,
    charges_succeeded: u64,
    charges_failed: u64,
    charges_rejected: u64,
    notices_recorded: u64,
    events_appended: u64,
    /// Settlement batches closed by the last day.
    settlement_batches: u64,
    /// Whether `autodebit ledger check` finds the ledger as the log makes it.
    ledger_balanced: bool,
    /// Each day's statement reconciled at the day's end, summed over the days.
    reconciliation: Reconciliation,
    /// With `--anomalies` or `--complaints`: held charges and complaints, and what became of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    risk: Option<crate::demo_risk::Risk>,
    wall_seconds: f64,
}

#[derive(serde::Serialize, Default)]
struct Reconciliation {
    days: u64,
    lines: u64,
    matched: u64,
    short_payments: u64,
    status_mismatches: u64,
    duplicates: u64,
    unknown_orders: u64,
    amount_mismatches: u64,
    /// Duplicate debits whose refund the simulator paid back.
    duplicates_refunded: u64,
    /// Discrepancies whose deadline passed open by the last day.
    escalated: u64,
}

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let (url, field) = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => (url.clone(), "--database-url"),
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("--data-dir: cannot make {}", dir.display()))?;
            (format!("sqlite://{}", dir.join("autodebit.db").display()), "--data-dir")
        }
        (None, None) => (format!("sqlite://{}", tmp.path().join("demo.db").display()), "--database-url"),
    };
    // The demo's clock and contracts would run among whatever is there: refuse before starting.
    let held = EventStore::open(StoreOptions::new(url.as_str())).await?.count().await?;
    if held > 0 {
        bail!("{field}: the database already holds {held} events; the demo needs an empty one");
    }
    let listen = ListenArgs { grpc_addr: "127.0.0.1:0".parse()?, http_addr: "127.0.0.1:0".parse()? };
    let operator_key = format!("op_{}", uuid::Uuid::new_v4().simple());
    let options = PlatformArgs {
        // The driver keeps 64 calls in flight; none of them is to be shed.
        max_in_flight: 64,
        test_clock: true,
        simulator_seed: args.seed,
        decline_basis_points: args.decline_basis_points,
        hard_decline_basis_points: 0,
        transient_basis_points: 0,
        simulator_latency_ms: 0,
        simulator_latency_p99_ms: 0,
        charger_concurrency: 1024,
        merchant_concurrency: 256,
        wechatpay_config: None,
        provider_qps: 0,
        operator_key: Some(operator_key.clone()),
        public_url: None,
        signing_session_minutes: 10,
        charge_window: "07:00-22:00".into(),
        wechat_api_url: autodebit_notifier::WECHAT_API_URL.into(),
        tencent_sms_url: autodebit_notifier::TENCENT_SMS_URL.into(),
        webhook_key: None,
        allow_loopback_webhooks: true,
        db_pool: 16,
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        holiday_calendar: None,
        // Each day's batches are closed below, once the day's charges have ended.
        settlement_closer: false,
        simulator_statements: true,
        statement_discrepancies: args.discrepancies,
        initial_credit_score: autodebit_domain::credit::DEFAULT_INITIAL,
        contracts: Default::default(),
    };
    let running = platform::start(&url, &Service::all(), &listen, &options).await?;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))?.connect().await?;
    let result = drive(&args, channel, &running.platform, &running.tables, running.http_addr, &operator_key).await;
    running.stop().await?;
    let mut report = result?;
    report.wall_seconds = started.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&report)?);
    let ended = report.charges_succeeded + report.charges_failed + report.charges_rejected;
    if ended != report.charges_scheduled {
        bail!(
            "{} of {} scheduled charges reached no outcome",
            report.charges_scheduled - ended,
            report.charges_scheduled
        );
    }
    Ok(())
}

/// A request carrying `key` as its bearer credential.
pub(crate) fn authed<T>(message: T, key: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse()?);
    Ok(req)
}

/// Onboards one merchant (apply, review, approve) and gives it a monthly plan; returns its
/// id and the plan's.
pub(crate) async fn onboard(channel: &Channel, operator_key: &str) -> anyhow::Result<(String, String)> {
    onboard_as(channel, operator_key, rand_digits()).await
}

/// `onboard`, the merchant's credit code ending in `digits` (six of them).
async fn onboard_as(channel: &Channel, operator_key: &str, digits: u64) -> anyhow::Result<(String, String)> {
    let (merchant_id, plan_id, _) = onboard_with_key(channel, operator_key, digits).await?;
    Ok((merchant_id, plan_id))
}

/// `onboard_as`, also returning the merchant's API key.
pub(crate) async fn onboard_with_key(
    channel: &Channel,
    operator_key: &str,
    digits: u64,
) -> anyhow::Result<(String, String, String)> {
    use autodebit_proto::contracts::v1::{
        ApplyMerchantRequest, CreatePlanRequest, ReviewAction, ReviewMerchantRequest,
        merchants_service_client::MerchantsServiceClient, plans_service_client::PlansServiceClient,
    };
    use autodebit_proto::events::v1::{
        AmountType, ChargeMode, Document, DocumentKind, EntityKind, MerchantType, PlanTerms,
    };
    let mut merchants = MerchantsServiceClient::new(channel.clone());
    let documents =
        [DocumentKind::BusinessLicence, DocumentKind::LegalRepresentativeId, DocumentKind::CorporateBankAccount]
            .iter()
            .map(|k| Document {
                kind: *k as i32,
                sha256: "0".repeat(64),
                location: format!("demo://documents/{}", *k as i32),
            })
            .collect();
    let applied = merchants
        .apply_merchant(ApplyMerchantRequest {
            legal_name: "示例视频会员有限公司".into(),
            credit_code: format!("91330100DEMO{:06}", digits % 1_000_000),
            entity: EntityKind::Enterprise as i32,
            industry: "membership".into(),
            merchant_type: MerchantType::Other as i32,
            documents,
            contact_email: "ops@demo.example".into(),
            idempotency_key: String::new(),
            time_zone: String::new(),
        })
        .await?
        .into_inner()
        .merchant
        .context("no merchant")?;
    let review = |action: ReviewAction| ReviewMerchantRequest {
        merchant_id: applied.merchant_id.clone(),
        action: action as i32,
        reason: String::new(),
    };
    merchants.review_merchant(authed(review(ReviewAction::Start), operator_key)?).await?;
    let key =
        merchants.review_merchant(authed(review(ReviewAction::Approve), operator_key)?).await?.into_inner().api_key;
    let mut plans = PlansServiceClient::new(channel.clone());
    let terms = PlanTerms {
        service_name: "视频会员（连续包月）".into(),
        charge_mode: ChargeMode::FixedCycle as i32,
        cycle: Cycle::Monthly as i32,
        amount_type: AmountType::UpToCap as i32,
        amount: None,
        per_charge_cap: Some(Money { minor_units: 10_000, currency: "CNY".into() }),
        service_period_days: 365,
        validity_days: 395,
        retry_schedule_hours: vec![6, 24],
        ..Default::default()
    };
    let plan = plans
        .create_plan(authed(CreatePlanRequest { terms: Some(terms), idempotency_key: "demo-plan".into() }, &key)?)
        .await?
        .into_inner()
        .plan
        .context("no plan")?;
    Ok((applied.merchant_id, plan.plan_id, key))
}

/// The import of payer `i`'s monthly contract of `fen` on `plan_id` (idempotency key and
/// merchant code made from `label` and `i`).
pub(crate) fn import_request(merchant_id: &str, plan_id: &str, label: &str, i: i64, fen: i64) -> SignContractRequest {
    SignContractRequest {
        merchant_id: merchant_id.to_string(),
        payer_id: format!("payer-{i}"),
        amount_per_cycle: Some(Money { minor_units: fen, currency: "CNY".into() }),
        cycle: Cycle::Monthly as i32,
        idempotency_key: format!("{label}-{i}"),
        merchant_contract_code: format!("{}{i:08}", label[..1].to_uppercase()),
        plan_id: plan_id.to_string(),
    }
}

/// Six digits that differ between runs, so repeated benchmarks on one database onboard afresh.
pub(crate) fn rand_digits() -> u64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u64
}

async fn drive(
    args: &DemoArgs,
    channel: Channel,
    platform: &autodebit_runtime::Platform,
    tables: &autodebit_eventstore::EventStore,
    http_addr: std::net::SocketAddr,
    operator_key: &str,
) -> anyhow::Result<Report> {
    let store = &platform.store;
    let calendar = autodebit_domain::calendar::WorkingCalendar::china();
    let mut admin = AdminServiceClient::new(channel.clone());
    let now_ms = admin.get_clock(authed(GetClockRequest {}, operator_key)?).await?.into_inner().now_ms;
    let seconds = (next_first_of_july(now_ms)? - now_ms) / 1000;
    if seconds > 0 {
        admin.advance_clock(authed(AdvanceClockRequest { seconds }, operator_key)?).await?;
    }
    let (merchant_id, plan_id, merchant_key) = onboard_with_key(&channel, operator_key, args.seed).await?;
    let risk_channel = channel.clone();
    let contracts = ContractsServiceClient::new(channel.clone());
    let mut scheduler = SchedulerServiceClient::new(channel.clone());
    let mut reconciliation = ReconciliationServiceClient::new(channel.clone());
    let mut charger = ChargerServiceClient::new(channel.clone());
    let mut analytics = AnalyticsServiceClient::new(channel);
    let status = || authed(GetSchedulerStatusRequest {}, operator_key);

    let pb = bar(u64::from(args.contracts), "signing");
    let label = format!("demo{}", args.seed);
    let signed = futures::stream::iter(0..args.contracts)
        .map(|i| {
            let mut client = contracts.clone();
            let request = authed(
                import_request(&merchant_id, &plan_id, &label, i64::from(i), 990 + i64::from(i % 50) * 100),
                operator_key,
            );
            async move { client.sign_contract(request?).await.map_err(anyhow::Error::from) }
        })
        .buffer_unordered(64)
        .inspect(|_| pb.inc(1))
        .fold(
            Ok(0u64),
            |acc: anyhow::Result<u64>, r| async move { Ok(acc? + r.map(|_| 1).context("signing a contract")?) },
        )
        .await?;
    pb.finish_and_clear();
    let anomalies = if args.anomalies {
        crate::demo_risk::sign_anomalies(&risk_channel, &merchant_id, &merchant_key, operator_key, args.seed).await?
    } else {
        Vec::new()
    };
    let signed = signed + anomalies.len() as u64;

    // Every contract has its schedule before time moves.
    wait_for("schedules", Duration::from_secs(120), || {
        let (mut s, request) = (scheduler.clone(), status());
        async move { Ok(s.get_scheduler_status(request?).await?.into_inner().active_schedules >= signed) }
    })
    .await?;

    if !anomalies.is_empty() {
        let held = crate::demo_risk::trigger_anomalies(&risk_channel, &merchant_key, &anomalies).await?;
        crate::demo_risk::resolve_holds(&risk_channel, store, http_addr, operator_key, &held).await?;
    }
    let mut complaints = Vec::new();
    let pb = bar(u64::from(args.days), "days");
    for day in 1..=args.days {
        admin.advance_clock(authed(AdvanceClockRequest { seconds: 86_400 }, operator_key)?).await?;
        // Let each day's charges be issued and end before the next, as a real day would, so
        // that each succeeds (and falls due for settlement) on its day, whatever the machine's
        // pace: the same seed, the same batches. First everything due is issued (timers and
        // failures' retries), then the day goes quiet; a retry due at once (or anything issued
        // meanwhile: the log moved) means another round.
        let nothing_due = || {
            let (mut s, request) = (scheduler.clone(), status());
            async move {
                let retry_due = autodebit_scheduler::store::any_retry_due(store, platform.clock.now()).await?;
                Ok(!retry_due && s.get_scheduler_status(request?).await?.into_inner().due_timers == 0)
            }
        };
        loop {
            wait_for("due charges and retries", Duration::from_secs(120), nothing_due).await?;
            let head = quiet(store, "the day's charges to end").await?;
            if nothing_due().await? && log_head(store).await? == head {
                break;
            }
        }
        // The day's complaints: filed once the first cycle's charges have succeeded, and the
        // deadlines passed unanswered by now penalised.
        if args.complaints && day == 31 {
            complaints =
                crate::demo_risk::file_complaints(&risk_channel, store, tables, &merchant_key, operator_key).await?;
        }
        autodebit_charger::complaints::miss_due(platform, &calendar).await?;
        if day == 32 {
            crate::demo_risk::answer_late(&risk_channel, &merchant_key, &complaints).await?;
        }
        // The day's settlement: every batch due by today, with every item due by today in it,
        // once the day's complaints' refunds have ended and been taken in.
        quiet(store, "the day's refunds to end").await?;
        autodebit_charger::settlement::review_refund_rates(platform).await?;
        autodebit_charger::settlement::close_due(platform, &calendar, platform.clock.now_ms()).await?;
        // The day's statement against the books; deadlines passed are escalated.
        let today = autodebit_charger::settlement::local_date(platform.clock.now_ms()).to_string();
        let request =
            ReconcileStatementRequest { merchant_id: merchant_id.clone(), date: today, statement: Vec::new() };
        reconciliation.reconcile_statement(authed(request, operator_key)?).await.context("reconciling the day")?;
        // The duplicates' refunds paid back before the day ends, so they are resolved, not escalated.
        quiet(store, "the duplicates' refunds to end").await?;
        autodebit_charger::reconcile::escalate_due(platform).await?;
        pb.inc(1);
    }
    pb.finish_and_clear();

    // Settled: nothing due, every event projected, twice in a row.
    let deadline = Instant::now() + Duration::from_secs(args.settle_timeout_secs);
    let mut stable = 0;
    let mut summary: GetSummaryResponse;
    loop {
        let due = scheduler.get_scheduler_status(status()?).await?.into_inner().due_timers;
        summary = analytics.get_summary(authed(GetSummaryRequest {}, operator_key)?).await?.into_inner();
        let events = store.count().await? as u64;
        let ended = summary.charges_succeeded + summary.charges_failed + summary.charges_rejected;
        if due == 0 && summary.events_projected == events && ended == summary.charges_scheduled {
            stable += 1;
            if stable == 2 {
                break;
            }
        } else {
            stable = 0;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every refund asked for (the duplicates') has its outcome, taken in for settlement.
    quiet(store, "refunds to end").await?;
    // The last day's batches.
    autodebit_charger::settlement::close_due(platform, &calendar, platform.clock.now_ms()).await?;
    let batches = store.query("SELECT COUNT(*) FROM settlement_batches", &[]).await?;
    let settlement_batches = batches.first().and_then(|r| r.i64(0)).unwrap_or(0) as u64;
    let ledger_balanced = crate::ledger::check(store).await?.is_ok();
    let sums = store
        .query(
            "SELECT COUNT(*), COALESCE(SUM(lines), 0), COALESCE(SUM(matched), 0), COALESCE(SUM(short_payments), 0),
                    COALESCE(SUM(status_mismatches), 0), COALESCE(SUM(duplicates), 0), COALESCE(SUM(unknown_orders), 0),
                    COALESCE(SUM(amount_mismatches), 0)
             FROM reconciliation_reports",
            &[],
        )
        .await?;
    let sum = |i| sums.first().and_then(|r| r.i64(i)).unwrap_or(0) as u64;
    let mut reconciled = Reconciliation {
        days: sum(0),
        lines: sum(1),
        matched: sum(2),
        short_payments: sum(3),
        status_mismatches: sum(4),
        duplicates: sum(5),
        unknown_orders: sum(6),
        amount_mismatches: sum(7),
        ..Reconciliation::default()
    };
    let escalated =
        store.query("SELECT COUNT(*) FROM reconciliation_discrepancies WHERE escalated_at_ms > 0", &[]).await?;
    reconciled.escalated = escalated.first().and_then(|r| r.i64(0)).unwrap_or(0) as u64;
    let refunds = store
        .query("SELECT refund_id FROM reconciliation_discrepancies WHERE kind = 'duplicate' AND refund_id <> ''", &[])
        .await?;
    for r in refunds {
        let request = GetRefundRequest { refund_id: r.text(0).unwrap_or_default().to_string() };
        let refund = charger.get_refund(authed(request, operator_key)?).await?.into_inner().refund;
        if refund.is_some_and(|r| r.state == RefundState::Succeeded as i32) {
            reconciled.duplicates_refunded += 1;
        }
    }
    Ok(Report {
        settlement_batches,
        ledger_balanced,
        reconciliation: reconciled,
        risk: if args.anomalies || args.complaints { Some(crate::demo_risk::report(store).await?) } else { None },
        contracts_signed: signed,
        charges_scheduled: summary.charges_scheduled,
        charges_succeeded: summary.charges_succeeded,
        charges_failed: summary.charges_failed,
        charges_rejected: summary.charges_rejected,
        notices_recorded: summary.notices_recorded,
        events_appended: store.count().await? as u64,
        wall_seconds: 0.0,
    })
}

/// 02:00 UTC (10:00 in Beijing, inside the charge window) of the first 1 July at or after
/// `now_ms`: where every demo's calendar starts.
fn next_first_of_july(now_ms: i64) -> anyhow::Result<i64> {
    use chrono::{Datelike, TimeZone};
    let now = chrono::Utc.timestamp_millis_opt(now_ms).single().context("the clock's time")?;
    let july = |year| chrono::Utc.with_ymd_and_hms(year, 7, 1, 2, 0, 0).single().context("1 July");
    let this_year = july(now.year())?;
    Ok(if this_year >= now { this_year } else { july(now.year() + 1)? }.timestamp_millis())
}

/// The one number `sql` answers (0 for no row).
pub(crate) async fn count(store: &EventStore, sql: &str) -> anyhow::Result<i64> {
    Ok(store.query(sql, &[]).await?.first().and_then(|r| r.i64(0)).unwrap_or(0))
}

/// The log's last position.
pub(crate) async fn log_head(store: &EventStore) -> anyhow::Result<i64> {
    count(store, "SELECT COALESCE(MAX(position), 0) FROM events").await
}

/// Waits until nothing is in flight (no attempt, no refund) and the followers the day's steps
/// read from have taken in the whole log (by their own gauges: they move past events they pass
/// over), with nothing appended meanwhile: the log's head then, which holds every outcome (an
/// attempt's or refund's outcome is appended in the transaction that ends it).
async fn quiet(store: &EventStore, what: &str) -> anyhow::Result<i64> {
    const IN_FLIGHT: &str = "SELECT (SELECT COUNT(*) FROM charger_attempts) + (SELECT COUNT(*) FROM charger_refunds)";
    let at = std::cell::Cell::new(0);
    wait_for(what, Duration::from_secs(120), || async {
        if count(store, IN_FLIGHT).await? != 0 {
            return Ok(false);
        }
        let head = log_head(store).await?;
        // The attempts made, their failures' retries timed, their successes and refunds taken
        // in for settlement.
        let taken = ["charger.charges", "scheduler.contracts", "charger.settlement"].map(|follower| {
            autodebit_runtime::metrics::get(autodebit_runtime::metrics::FOLLOWER_POSITION, &[("follower", follower)])
        });
        at.set(head);
        Ok(taken.iter().all(|t| *t >= head) && count(store, IN_FLIGHT).await? == 0 && log_head(store).await? == head)
    })
    .await?;
    Ok(at.get())
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
