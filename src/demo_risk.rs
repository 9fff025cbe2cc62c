//! The demo's risk scenes (`autodebit demo --anomalies --complaints`): outsized charges held
//! and released by the payer, approved or rejected by an operator, or left to lapse; and
//! complaints of each kind, some answered in time, some late, one never.
use crate::demo::authed;
use anyhow::Context;
use autodebit_eventstore::EventStore;
use autodebit_proto::charger::v1::{
    AnswerComplaintRequest, EvidenceUpload, FileComplaintRequest, answer_complaint_request::Answer,
    complaints_service_client::ComplaintsServiceClient,
};
use autodebit_proto::contracts::v1::{CreatePlanRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{AmountType, ChargeMode, Cycle, Money, PlanTerms};
use autodebit_proto::scheduler::v1::{
    HoldDecision, ReviewHeldChargeRequest, TriggerChargeRequest, risk_service_client::RiskServiceClient,
    scheduler_service_client::SchedulerServiceClient,
};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// How many event-triggered contracts the anomalies run on, and what becomes of each one's
/// outsized charge: the payer confirms (2), an operator approves (2), an operator rejects (1),
/// nobody acts and it lapses after 48 hours (1).
const ANOMALY_CONTRACTS: i64 = 6;

#[derive(serde::Serialize, Default)]
pub struct Risk {
    pub charges_held: u64,
    pub held_released: u64,
    pub held_rejected: u64,
    pub complaints_opened: u64,
    pub complaints_resolved: u64,
    pub complaint_deadlines_missed: u64,
    pub penalties_applied: u64,
}

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

/// The anomalies' contracts: an event-triggered plan of the merchant and contracts on it whose
/// terms expect 5.00 CNY a charge. Returns their ids.
pub async fn sign_anomalies(
    channel: &Channel,
    merchant_id: &str,
    merchant_key: &str,
    operator_key: &str,
    seed: u64,
) -> anyhow::Result<Vec<String>> {
    let terms = PlanTerms {
        service_name: "共享单车（按次扣费）".into(),
        charge_mode: ChargeMode::EventTriggered as i32,
        cycle: Cycle::Monthly as i32,
        amount_type: AmountType::UpToCap as i32,
        per_charge_cap: cny(10_000),
        service_period_days: 365,
        validity_days: 395,
        ..Default::default()
    };
    let plan = autodebit_proto::contracts::v1::plans_service_client::PlansServiceClient::new(channel.clone())
        .create_plan(authed(
            CreatePlanRequest { terms: Some(terms), idempotency_key: "demo-rides".into() },
            merchant_key,
        )?)
        .await?
        .into_inner()
        .plan
        .context("no plan")?;
    let mut contracts = ContractsServiceClient::new(channel.clone());
    let mut ids = Vec::new();
    for i in 0..ANOMALY_CONTRACTS {
        let req = crate::demo::import_request(merchant_id, &plan.plan_id, &format!("rides{seed}"), i, 500);
        let c =
            contracts.sign_contract(authed(req, operator_key)?).await?.into_inner().contract.context("no contract")?;
        ids.push(c.contract_id);
    }
    Ok(ids)
}

/// Each anomaly contract's ride of 5.00 CNY, then one of 20.00 CNY, which the charge-time rule
/// holds (above 200% of the 5.00 its terms expect). Returns the held charges' ids.
pub async fn trigger_anomalies(
    channel: &Channel,
    merchant_key: &str,
    contracts: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut scheduler = SchedulerServiceClient::new(channel.clone());
    let mut held = Vec::new();
    for (i, contract) in contracts.iter().enumerate() {
        for (key, fen) in [("usual", 500), ("outsized", 2_000)] {
            let req = TriggerChargeRequest {
                contract_id: contract.clone(),
                amount: cny(fen),
                reason: "ride".into(),
                idempotency_key: format!("{key}-{i}"),
            };
            let t = scheduler.trigger_charge(authed(req, merchant_key)?).await?.into_inner();
            if t.outcome == autodebit_proto::scheduler::v1::TriggerOutcome::Held as i32 {
                held.push(t.charge_id);
            }
        }
    }
    Ok(held)
}

/// A plain HTTP/1.1 request to the platform's own listener; the status code.
async fn http(addr: SocketAddr, method: &str, path: &str, form: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).context("an HTTP status")?;
    Ok((status, text))
}

/// What becomes of the held charges: the first two confirmed by their payer on the step-up
/// page (reading the page's credential hint, as a payer would), two approved and one rejected
/// by an operator; the last left to lapse.
pub async fn resolve_holds(
    channel: &Channel,
    store: &EventStore,
    http_addr: SocketAddr,
    operator_key: &str,
    held: &[String],
) -> anyhow::Result<()> {
    let mut risk = RiskServiceClient::new(channel.clone());
    for (i, charge) in held.iter().enumerate() {
        match i {
            0 | 1 => {
                let rows = store
                    .query("SELECT token FROM scheduler_risk_holds WHERE charge_id = $1", &[charge.as_str().into()])
                    .await?;
                let token = rows.first().and_then(|r| r.text(0)).context("the hold's token")?.to_string();
                let (_, page) = http(http_addr, "GET", &format!("/holds/{token}"), "").await?;
                let at = page.find("id=\"code-hint\">").context("the page's credential hint")? + 15;
                let code = &page[at..at + 6];
                let (status, _) =
                    http(http_addr, "POST", &format!("/holds/{token}/confirm"), &format!("code={code}")).await?;
                anyhow::ensure!(status == 303, "confirming held charge {charge}: HTTP {status}");
            }
            2..=4 => {
                let decision = if i == 4 { HoldDecision::Reject } else { HoldDecision::Approve };
                let req = ReviewHeldChargeRequest {
                    charge_id: charge.clone(),
                    decision: decision as i32,
                    note: "demo".into(),
                };
                risk.review_held_charge(authed(req, operator_key)?).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Four of the merchant's succeeded charges, by id (the same for the same seed), once the
/// analytics projector has taken in the log as it stands (`tables`: where its tables are).
async fn charges_to_complain_about(store: &EventStore, tables: &EventStore) -> anyhow::Result<Vec<String>> {
    let head = store.query("SELECT COALESCE(MAX(position), 0) FROM events", &[]).await?;
    let head = head.first().and_then(|r| r.i64(0)).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let labels = [("follower", "analytics.projections")];
    while autodebit_runtime::metrics::get(autodebit_runtime::metrics::FOLLOWER_POSITION, &labels) < head {
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out waiting for the analytics projector");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rows = tables
        .query(
            "SELECT charge_id FROM analytics_charges WHERE state = 'succeeded' AND reason = 'cycle'
             ORDER BY charge_id LIMIT 4",
            &[],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| r.text(0).map(str::to_string)).collect())
}

/// One complaint of each kind; answered at once: the unauthorized charge with a refund, the
/// other one rejected with evidence. The amount dispute and the service not delivered wait.
pub async fn file_complaints(
    channel: &Channel,
    store: &EventStore,
    tables: &EventStore,
    merchant_key: &str,
    operator_key: &str,
) -> anyhow::Result<Vec<String>> {
    let mut complaints = ComplaintsServiceClient::new(channel.clone());
    let kinds = ["unauthorized_charge", "amount_dispute", "service_not_delivered", "other"];
    let mut ids = Vec::new();
    for (charge, kind) in charges_to_complain_about(store, tables).await?.into_iter().zip(kinds) {
        let req = FileComplaintRequest {
            charge_id: charge,
            kind: kind.into(),
            description: "用户来电投诉".into(),
            evidence: Vec::new(),
        };
        let filed = complaints.file_complaint(authed(req, operator_key)?).await?.into_inner();
        ids.push(filed.complaint.context("no complaint")?.complaint_id);
    }
    let answer = |id: &str, a: Answer, evidence: Vec<EvidenceUpload>| AnswerComplaintRequest {
        complaint_id: id.to_string(),
        answer: Some(a),
        evidence,
    };
    if let Some(id) = ids.first() {
        let refund = Answer::Refund(Money { minor_units: 100, currency: "CNY".into() });
        complaints.answer_complaint(authed(answer(id, refund, Vec::new()), merchant_key)?).await?;
    }
    if let Some(id) = ids.get(3) {
        let pdf = EvidenceUpload {
            name: "订单记录.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4 demo".to_vec(),
        };
        let reject = Answer::RejectReason("服务已按约提供".into());
        complaints.answer_complaint(authed(answer(id, reject, vec![pdf]), merchant_key)?).await?;
    }
    Ok(ids)
}

/// A day later: the amount dispute answered, late (its deadline passed and its penalty stands).
pub async fn answer_late(channel: &Channel, merchant_key: &str, complaints: &[String]) -> anyhow::Result<()> {
    if let Some(id) = complaints.get(1) {
        let req = AnswerComplaintRequest {
            complaint_id: id.clone(),
            answer: Some(Answer::ResolveNote("已与用户核对金额".into())),
            evidence: Vec::new(),
        };
        ComplaintsServiceClient::new(channel.clone()).answer_complaint(authed(req, merchant_key)?).await?;
    }
    Ok(())
}

/// The figures of the report's `risk`.
pub async fn report(store: &EventStore) -> anyhow::Result<Risk> {
    let count = |sql: &'static str| async move {
        anyhow::Ok(store.query(sql, &[]).await?.first().and_then(|r| r.i64(0)).unwrap_or(0) as u64)
    };
    Ok(Risk {
        charges_held: count("SELECT COUNT(*) FROM scheduler_risk_holds").await?,
        held_released: count("SELECT COUNT(*) FROM scheduler_risk_holds WHERE state IN ('released', 'scheduled')").await?,
        held_rejected: count("SELECT COUNT(*) FROM scheduler_risk_holds WHERE state = 'rejected'").await?,
        complaints_opened: count("SELECT COUNT(*) FROM complaints").await?,
        complaints_resolved: count("SELECT COUNT(*) FROM complaints WHERE state = 'answered'").await?,
        complaint_deadlines_missed: count("SELECT COUNT(*) FROM complaints WHERE missed <> ''").await?,
        penalties_applied: count(
            "SELECT COUNT(*) FROM complaints WHERE missed IN ('charging_frozen', 'settlement_delayed', 'credit_reduced')",
        )
        .await?,
    })
}
