//! Complaints about charges: one per charge, a deadline by kind on the test clock, the
//! penalty a missed deadline brings (charging frozen, settlement delayed, credit reduced), the
//! merchant's answers (a refund carried out), SLA figures, and the credit score that refuses
//! signings and freezes charging when low. On SQLite and on PostgreSQL.
use crate::{scenario, support};

use autodebit_domain::calendar::WorkingCalendar;
use autodebit_proto::analytics::v1::{
    ComplaintOutcomeRow, GetRiskOutcomesRequest, analytics_service_client::AnalyticsServiceClient,
};
use autodebit_proto::charger::v1::{
    AdjustCreditScoreRequest, AnswerComplaintRequest, Complaint, CreditScore, EvidenceUpload, FileComplaintRequest,
    GetChargeRequest, GetComplaintStatsRequest, GetCreditScoreRequest, LiftChargingFreezeRequest,
    ListSettlementBatchesRequest, answer_complaint_request::Answer, charger_service_client::ChargerServiceClient,
    complaints_service_client::ComplaintsServiceClient, settlement_service_client::SettlementServiceClient,
};
use autodebit_proto::contracts::v1::{CreateSigningSessionRequest, contracts_service_client::ContractsServiceClient};
use autodebit_proto::events::v1::{ChargeMode, Cycle, Money, SigningChannel};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, TriggerChargeRequest, TriggerOutcome, scheduler_service_client::SchedulerServiceClient,
};
use scenario::{Merchant, authed, create_plan as plan, onboard, sign_on as sign};
use support::{Backend, TestApp, eventually};
use tonic::Code;
use tonic::transport::Channel;

both!(complaints_have_deadlines_penalties_answers_and_move_the_credit_score);

#[tokio::test]
async fn merchants_start_at_the_configured_credit_score() {
    let p = TestApp::builder().args(&["--test-clock", "--initial-credit-score", "70"]).spawn().await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2CMP0003").await;
    p.caught_up().await;
    assert_eq!(credit(&ch, &m.merchant_id).await.score, 70);
    // Below the signing floor, or above the top, is refused before anything starts.
    for bad in ["59", "1001"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
            .args(["run", "--test-clock", "--initial-credit-score", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--initial-credit-score"), "{stderr}");
    }
}

const HOUR: i64 = 3_600;
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-the-screenshot";

async fn run(backend: Backend) -> TestApp {
    support::run_on(backend, 0, &["--test-clock"]).await
}

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

async fn trigger(
    ch: &Channel,
    m: &Merchant,
    contract: &str,
    key: &str,
) -> autodebit_proto::scheduler::v1::TriggerChargeResponse {
    let req = TriggerChargeRequest {
        contract_id: contract.into(),
        amount: cny(300),
        reason: "ride".into(),
        idempotency_key: key.into(),
    };
    SchedulerServiceClient::new(ch.clone()).trigger_charge(authed(req, &m.api_key)).await.unwrap().into_inner()
}

async fn succeeded(ch: &Channel, id: &str) {
    eventually(&format!("charge {id} to succeed"), 30, || async move {
        let c = ChargerServiceClient::new(ch.clone())
            .get_charge(support::op(GetChargeRequest { charge_id: id.into() }))
            .await
            .ok()?
            .into_inner()
            .charge?;
        (c.state == autodebit_proto::charger::v1::ChargeState::Succeeded as i32).then_some(())
    })
    .await
}

fn complaints(ch: &Channel) -> ComplaintsServiceClient<Channel> {
    ComplaintsServiceClient::new(ch.clone())
}

async fn file(ch: &Channel, key: &str, charge: &str, kind: &str) -> Result<Complaint, tonic::Status> {
    let req = FileComplaintRequest {
        charge_id: charge.into(),
        kind: kind.into(),
        description: "不是我本人的消费".into(),
        evidence: vec![EvidenceUpload {
            name: "screen.png".into(),
            content_type: "image/png".into(),
            data: PNG.to_vec(),
        }],
    };
    Ok(complaints(ch).file_complaint(authed(req, key)).await?.into_inner().complaint.unwrap())
}

async fn answer(
    ch: &Channel,
    key: &str,
    id: &str,
    a: Answer,
    evidence: Vec<EvidenceUpload>,
) -> Result<Complaint, tonic::Status> {
    let req = AnswerComplaintRequest { complaint_id: id.into(), answer: Some(a), evidence };
    Ok(complaints(ch).answer_complaint(authed(req, key)).await?.into_inner().complaint.unwrap())
}

async fn credit(ch: &Channel, merchant: &str) -> CreditScore {
    let req = GetCreditScoreRequest { merchant_id: merchant.into() };
    complaints(ch).get_credit_score(support::op(req)).await.unwrap().into_inner().credit.unwrap()
}

async fn get(ch: &Channel, id: &str) -> Complaint {
    let req = autodebit_proto::charger::v1::GetComplaintRequest { complaint_id: id.into() };
    complaints(ch).get_complaint(support::op(req)).await.unwrap().into_inner().complaint.unwrap()
}

/// A trigger answered with `outcome`, a new key each try (a repeated key repeats its answer).
async fn triggered_as(ch: &Channel, m: &Merchant, contract: &str, outcome: TriggerOutcome, tag: &str) -> String {
    let n = std::sync::atomic::AtomicU32::new(0);
    eventually(&format!("a trigger answered {outcome:?}"), 30, || async {
        let key = format!("{tag}-{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let t = trigger(ch, m, contract, &key).await;
        (t.outcome == outcome as i32).then_some(t.rule)
    })
    .await
}

async fn complaints_have_deadlines_penalties_answers_and_move_the_credit_score(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let op = p.operator_key();
    let m = onboard(&ch, "91330100MA2CMP0001").await;
    let rides = plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let contract = sign(&ch, &m, &rides, "payer-c", 500, Cycle::Monthly).await;
    eventually("the schedule", 30, || async {
        let req = GetScheduleRequest { contract_id: contract.clone() };
        SchedulerServiceClient::new(ch.clone()).get_schedule(support::op(req)).await.ok()
    })
    .await;
    let mut charges = Vec::new();
    for key in ["a", "b", "c", "d"] {
        let t = trigger(&ch, &m, &contract, key).await;
        succeeded(&ch, &t.charge_id).await;
        charges.push(t.charge_id);
    }
    let started = credit(&ch, &m.merchant_id).await;
    assert_eq!((started.score, started.standing.as_str()), (100, "good"));

    // Bad input names the field and files nothing; merchants do not file.
    let e = file(&ch, &m.api_key, &charges[0], "unauthorized_charge").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = file(&ch, op, &charges[0], "annoyed").await.unwrap_err();
    assert!(e.message().starts_with("kind"), "{e:?}");
    let mut big = FileComplaintRequest {
        charge_id: charges[0].clone(),
        kind: "other".into(),
        description: "x".into(),
        evidence: vec![EvidenceUpload {
            name: "huge.pdf".into(),
            content_type: "application/pdf".into(),
            data: [b"%PDF-".as_slice(), &vec![0u8; 2 * 1024 * 1024]].concat(),
        }],
    };
    let e = complaints(&ch).file_complaint(authed(big.clone(), op)).await.unwrap_err();
    assert!(e.message().starts_with("evidence: huge.pdf"), "{e:?}");
    big.evidence = vec![EvidenceUpload {
        name: "run.exe".into(),
        content_type: "application/x-msdownload".into(),
        data: b"MZ".to_vec(),
    }];
    let e = complaints(&ch).file_complaint(authed(big, op)).await.unwrap_err();
    assert!(e.message().starts_with("evidence: run.exe"), "{e:?}");
    assert_eq!(credit(&ch, &m.merchant_id).await.score, 100, "nothing was filed");

    // One of each kind; a second on the same charge is refused.
    let a = file(&ch, op, &charges[0], "unauthorized_charge").await.unwrap();
    let b = file(&ch, op, &charges[1], "amount_dispute").await.unwrap();
    let c = file(&ch, op, &charges[2], "service_not_delivered").await.unwrap();
    let d = file(&ch, op, &charges[3], "other").await.unwrap();
    assert_eq!(a.deadline_at_ms - a.filed_at_ms, 2 * HOUR * 1000);
    assert_eq!(b.deadline_at_ms - b.filed_at_ms, 12 * HOUR * 1000);
    assert_eq!(c.deadline_at_ms - c.filed_at_ms, 24 * HOUR * 1000);
    assert_eq!(a.evidence.len(), 1);
    let e = file(&ch, op, &charges[0], "other").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert_eq!(credit(&ch, &m.merchant_id).await.score, 100 - 5 - 2 - 2 - 2);
    // The payer is told each complaint was received, and by when the merchant answers.
    eventually("the payer's complaint notices", 30, || async {
        let req = autodebit_proto::notifier::v1::ListNoticesRequest { contract_id: contract.clone() };
        let notices = autodebit_proto::notifier::v1::notifier_service_client::NotifierServiceClient::new(ch.clone())
            .list_notices(support::op(req))
            .await
            .ok()?
            .into_inner()
            .notices;
        let received: Vec<_> = notices
            .into_iter()
            .filter(|n| n.kind == autodebit_proto::events::v1::NoticeKind::ComplaintReceived as i32)
            .collect();
        (received.len() == 4 && received.iter().all(|n| n.text.contains("¥3.00"))).then_some(())
    })
    .await;

    // Answers: another merchant finds nothing; a rejection needs evidence; in time, no penalty.
    let other = onboard(&ch, "91330100MA2CMP0002").await;
    let e = answer(&ch, &other.api_key, &a.complaint_id, Answer::ResolveNote("x".into()), vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e =
        answer(&ch, &m.api_key, &c.complaint_id, Answer::RejectReason("delivered".into()), vec![]).await.unwrap_err();
    assert!(e.message().starts_with("evidence"), "{e:?}");
    let stray = vec![EvidenceUpload { name: "x.png".into(), content_type: "image/png".into(), data: PNG.to_vec() }];
    let e = answer(&ch, &m.api_key, &c.complaint_id, Answer::ResolveNote("fine".into()), stray).await.unwrap_err();
    assert_eq!(e.message(), "evidence: only a rejection carries evidence");
    let png =
        vec![EvidenceUpload { name: "delivery.png".into(), content_type: "image/png".into(), data: PNG.to_vec() }];
    let c =
        answer(&ch, &m.api_key, &c.complaint_id, Answer::RejectReason("delivered on time".into()), png).await.unwrap();
    assert_eq!((c.state.as_str(), c.answer.as_str(), c.late, c.evidence.len()), ("answered", "reject", false, 2));
    let d = answer(&ch, &m.api_key, &d.complaint_id, Answer::ResolveNote("explained".into()), vec![]).await.unwrap();
    assert!(!d.late);
    let e = answer(&ch, &m.api_key, &d.complaint_id, Answer::ResolveNote("again".into()), vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "answered once");

    // 2 hours: the unauthorized charge's deadline passes unanswered — charging frozen.
    p.advance_seconds(2 * HOUR).await;
    let a_missed = eventually("the first deadline's penalty", 30, || async {
        Some(get(&ch, &a.complaint_id).await).filter(|c| !c.penalty.is_empty())
    })
    .await;
    assert_eq!(a_missed.penalty, "charging_frozen");
    let frozen = credit(&ch, &m.merchant_id).await;
    assert_eq!((frozen.score, frozen.charging_frozen_by_complaint), (89 - 10, true));
    assert_eq!(triggered_as(&ch, &m, &contract, TriggerOutcome::Rejected, "frozen").await, "charging_frozen");

    // A late answer is taken, and its refund carried out.
    let late = answer(
        &ch,
        &m.api_key,
        &a.complaint_id,
        Answer::Refund(Money { minor_units: 300, currency: "CNY".into() }),
        vec![],
    )
    .await
    .unwrap();
    assert!(late.late);
    eventually("the complaint's refund", 30, || async {
        let c = ChargerServiceClient::new(ch.clone())
            .get_charge(support::op(GetChargeRequest { charge_id: charges[0].clone() }))
            .await
            .ok()?
            .into_inner()
            .charge?;
        (c.refunded.as_ref()?.minor_units == 300).then_some(())
    })
    .await;
    // One refund of four charges is a refund rate above 5%: a review, and 5 points.
    eventually("the refund-rate review's cost", 30, || async {
        (credit(&ch, &m.merchant_id).await.score == 74).then_some(())
    })
    .await;

    // 12 hours: the amount dispute's passes — settlement delayed — and costs 10 more.
    p.advance_seconds(10 * HOUR).await;
    let b_missed = eventually("the second deadline's penalty", 30, || async {
        Some(get(&ch, &b.complaint_id).await).filter(|c| !c.penalty.is_empty())
    })
    .await;
    assert_eq!(b_missed.penalty, "settlement_delayed");
    assert_eq!(credit(&ch, &m.merchant_id).await.score, 74 - 10);
    // Its batches wait a working day more: none closes before the second working day after.
    let missed_day = autodebit_charger::settlement::local_date(b_missed.deadline_at_ms);
    let not_before = WorkingCalendar::china().add_working_days(missed_day, 2);
    let batches = || async {
        let req = ListSettlementBatchesRequest { merchant_id: m.merchant_id.clone(), ..Default::default() };
        SettlementServiceClient::new(ch.clone())
            .list_settlement_batches(support::op(req))
            .await
            .unwrap()
            .into_inner()
            .batches
    };
    for _ in 0..10 {
        p.advance(1).await;
        p.settled().await;
        let now = autodebit_charger::settlement::local_date(
            SchedulerServiceClient::new(ch.clone())
                .get_scheduler_status(support::op(autodebit_proto::scheduler::v1::GetSchedulerStatusRequest {}))
                .await
                .unwrap()
                .into_inner()
                .now_ms,
        );
        let closed = batches().await;
        if now < not_before {
            assert!(closed.is_empty(), "closed on {now}, before {not_before}: {closed:?}");
        } else if !closed.is_empty() {
            break;
        }
    }
    eventually("settled after the delay", 30, || async { (!batches().await.is_empty()).then_some(()) }).await;

    // The SLA figures.
    let stats = complaints(&ch)
        .get_complaint_stats(authed(GetComplaintStatsRequest::default(), &m.api_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.filed, stats.open, stats.answered_in_time, stats.answered_late, stats.deadlines_missed),
        (4, 1, 2, 1, 2)
    );
    assert_eq!(stats.on_time_basis_points, 5_000);
    // Analytics tells the same, per kind.
    let outcomes = eventually("analytics to hold the complaints' outcomes", 30, || async {
        let req = authed(GetRiskOutcomesRequest::default(), &m.api_key);
        let rows = AnalyticsServiceClient::new(ch.clone()).get_risk_outcomes(req).await.ok()?.into_inner().complaints;
        let sum = |f: fn(&ComplaintOutcomeRow) -> u64| rows.iter().map(f).sum::<u64>();
        let figures = (sum(|r| r.filed), sum(|r| r.open), sum(|r| r.answered_in_time), sum(|r| r.answered_late));
        (figures == (4, 1, 2, 1) && sum(|r| r.missed) == 2).then_some(rows)
    })
    .await;
    assert_eq!(outcomes.len(), 4, "one row per kind: {outcomes:?}");
    assert!(outcomes.iter().all(|r| r.merchant_id == m.merchant_id && r.source == "operator"), "{outcomes:?}");

    // The operator lifts the freeze: charging goes on.
    let lift =
        LiftChargingFreezeRequest { merchant_id: m.merchant_id.clone(), reason: "refunded and explained".into() };
    complaints(&ch).lift_charging_freeze(authed(lift.clone(), op)).await.unwrap();
    triggered_as(&ch, &m, &contract, TriggerOutcome::Scheduled, "lifted").await;
    let e = complaints(&ch).lift_charging_freeze(authed(lift, op)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // A low score: below 60 no signing, below 40 no charging either.
    let adjust =
        |delta: i64| AdjustCreditScoreRequest { merchant_id: m.merchant_id.clone(), delta, reason: "review".into() };
    let e = complaints(&ch).adjust_credit_score(authed(adjust(-40), &m.api_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let low = complaints(&ch).adjust_credit_score(authed(adjust(-40), op)).await.unwrap().into_inner().credit.unwrap();
    assert_eq!((low.score, low.standing.as_str()), (24, "charging_frozen"));
    let session = CreateSigningSessionRequest {
        plan_id: m.plan_id.clone(),
        payer_id: "payer-new".into(),
        channel: SigningChannel::H5 as i32,
        device_id: "d".into(),
        client_ip: "192.0.2.40".into(),
        return_url: "https://merchant.example/done".into(),
        ..Default::default()
    };
    let refused = eventually("signing refused", 30, || async {
        let r =
            ContractsServiceClient::new(ch.clone()).create_signing_session(authed(session.clone(), &m.api_key)).await;
        r.err().filter(|e| e.code() == Code::FailedPrecondition)
    })
    .await;
    assert!(refused.message().contains("credit score 24"), "{refused:?}");
    assert_eq!(triggered_as(&ch, &m, &contract, TriggerOutcome::Rejected, "low").await, "charging_frozen");
    complaints(&ch).adjust_credit_score(authed(adjust(50), op)).await.unwrap();
    triggered_as(&ch, &m, &contract, TriggerOutcome::Scheduled, "restored").await;
}
