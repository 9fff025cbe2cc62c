//! Charge-time risk: a charge above 200% of its contract's historical mean is held, not sent;
//! the payer releases it on the step-up page their notice links to, an operator through
//! `ReviewHeldCharge`, and nobody within 48 hours means rejected. Held charges count once
//! against the limits. On SQLite and on PostgreSQL, through the real binary's interfaces.
use crate::{scenario, support};

use autodebit_proto::analytics::v1::{GetRiskOutcomesRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::charger::v1::{
    Charge, ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient,
};
use autodebit_proto::contracts::v1::{
    CreateSigningSessionRequest, SigningState, contracts_service_client::ContractsServiceClient,
};
use autodebit_proto::events::v1::{ChargeMode, Cycle, Money, NoticeKind};
use autodebit_proto::events::v1::{RiskScope, SigningChannel};
use autodebit_proto::notifier::v1::{ListNoticesRequest, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, HeldCharge, HoldDecision, HoldState, ListHeldChargesRequest, ListRiskDecisionsRequest,
    ListRiskRulesRequest, ReviewHeldChargeRequest, RiskDecision, RiskRule, SetRiskRuleRequest, TriggerChargeRequest,
    TriggerChargeResponse, TriggerOutcome, risk_service_client::RiskServiceClient,
    scheduler_service_client::SchedulerServiceClient,
};
use scenario::{Merchant, authed, create_plan as plan, onboard, sign_on as sign};
use support::{Backend, TestApp, element_text, eventually, http_get, http_post};
use tonic::Code;
use tonic::transport::Channel;

const HOUR: i64 = 3_600;

both!(
    the_payer_releases_a_held_charge_and_it_counts_once_against_the_limits,
    a_held_charge_nobody_releases_is_rejected_after_48_hours_and_operators_review,
    rules_are_data_within_the_platforms_floor_and_every_decision_is_audited,
    a_release_at_night_waits_for_the_window_and_a_stopped_contract_is_not_charged,
);

async fn run(backend: Backend) -> TestApp {
    support::run_on(backend, 0, &["--test-clock"]).await
}

fn cny(fen: i64) -> Option<Money> {
    Some(Money { minor_units: fen, currency: "CNY".into() })
}

/// A merchant with an event-triggered plan (at most `daily` charges a day) and a contract on
/// it whose terms expect 500 fen a charge.
async fn setup(ch: &Channel, credit_code: &str, daily: u32) -> (Merchant, String) {
    let (m, _, contract) = setup_plan(ch, credit_code, daily).await;
    (m, contract)
}

/// As `setup`, with the plan's id.
async fn setup_plan(ch: &Channel, credit_code: &str, daily: u32) -> (Merchant, String, String) {
    let m = onboard(ch, credit_code).await;
    let rides = plan(ch, &m, |t| {
        t.charge_mode = ChargeMode::EventTriggered as i32;
        t.daily_count_limit = daily;
    })
    .await;
    let contract = sign(ch, &m, &rides, "payer-risk", 500, Cycle::Monthly).await;
    eventually("the schedule", 30, || {
        let (ch, id) = (ch.clone(), contract.clone());
        async move {
            SchedulerServiceClient::new(ch)
                .get_schedule(support::op(GetScheduleRequest { contract_id: id }))
                .await
                .ok()?
                .into_inner()
                .schedule
        }
    })
    .await;
    (m, rides, contract)
}

async fn trigger(ch: &Channel, m: &Merchant, contract: &str, fen: i64, key: &str) -> TriggerChargeResponse {
    let req = TriggerChargeRequest {
        contract_id: contract.into(),
        amount: cny(fen),
        reason: "ride".into(),
        idempotency_key: key.into(),
    };
    SchedulerServiceClient::new(ch.clone()).trigger_charge(authed(req, &m.api_key)).await.unwrap().into_inner()
}

async fn charge(ch: &Channel, id: &str) -> Option<Charge> {
    let req = GetChargeRequest { charge_id: id.to_string() };
    ChargerServiceClient::new(ch.clone()).get_charge(support::op(req)).await.ok()?.into_inner().charge
}

async fn in_state(ch: &Channel, id: &str, state: ChargeState) -> Charge {
    eventually(&format!("charge {id} in {state:?}"), 30, || async move {
        charge(ch, id).await.filter(|c| c.state == state as i32)
    })
    .await
}

async fn held(ch: &Channel, key: Option<&str>, req: ListHeldChargesRequest) -> Result<Vec<HeldCharge>, tonic::Status> {
    let req = match key {
        Some(k) => authed(req, k),
        None => support::op(req),
    };
    RiskServiceClient::new(ch.clone()).list_held_charges(req).await.map(|r| r.into_inner().held_charges)
}

async fn review(ch: &Channel, charge_id: &str, decision: HoldDecision) -> Result<HeldCharge, tonic::Status> {
    let req =
        ReviewHeldChargeRequest { charge_id: charge_id.into(), decision: decision as i32, note: "checked".into() };
    let answer = RiskServiceClient::new(ch.clone()).review_held_charge(support::op(req)).await?;
    Ok(answer.into_inner().held_charge.unwrap())
}

/// The step-up page's path, from the payer's notice of the hold.
async fn step_up_path(ch: &Channel, contract: &str, charge_id: &str) -> String {
    eventually("the payer's notice of the hold", 30, || async move {
        let req = ListNoticesRequest { contract_id: contract.into() };
        let notices = NotifierServiceClient::new(ch.clone()).list_notices(support::op(req)).await.ok()?.into_inner();
        let n = notices
            .notices
            .into_iter()
            .find(|n| n.kind == NoticeKind::ChargeHeld as i32 && n.charge_id == charge_id)?;
        let at = n.text.find("/holds/")?;
        Some(n.text[at..at + "/holds/".len() + 64].to_string())
    })
    .await
}

async fn the_payer_releases_a_held_charge_and_it_counts_once_against_the_limits(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let (m, contract) = setup(&ch, "91330100MA2RSK0001", 3).await;

    // Before any history the terms' 500 fen is the mean: 1,000 passes (charge 1 of the day).
    let first = trigger(&ch, &m, &contract, 1_000, "r1").await;
    assert_eq!(first.outcome, TriggerOutcome::Scheduled as i32);
    in_state(&ch, &first.charge_id, ChargeState::Succeeded).await;
    p.caught_up().await;

    // The mean is now 1,000: 2,001 is held, not sent (charge 2 of the day, counted now).
    let big = trigger(&ch, &m, &contract, 2_001, "r2").await;
    assert_eq!(big.outcome, TriggerOutcome::Held as i32, "{big:?}");
    assert_eq!(big.rule, "charge_over_mean");
    assert!(big.detail.contains("2001 > 200% of 1000"), "{}", big.detail);
    let again = trigger(&ch, &m, &contract, 2_001, "r2").await;
    assert_eq!(again, TriggerChargeResponse { duplicate: true, ..big.clone() }, "the first answer again");
    let c = in_state(&ch, &big.charge_id, ChargeState::Held).await;
    assert_eq!((c.hold_rule.as_str(), c.attempt), ("charge_over_mean", 0));
    p.settled().await;
    assert_eq!(charge(&ch, &big.charge_id).await.unwrap().state, ChargeState::Held as i32, "never attempted");

    // The merchant sees its hold with the rule's inputs; another merchant sees nothing.
    let list = held(&ch, Some(&m.api_key), ListHeldChargesRequest::default()).await.unwrap();
    assert_eq!(list.len(), 1);
    let h = &list[0];
    assert_eq!((h.mean_minor_units, h.threshold_percent, h.history_count), (1_000, 200, 1));
    assert_eq!((h.state, h.expires_at_ms - h.held_at_ms), (HoldState::Held as i32, 48 * HOUR * 1000));
    let other = onboard(&ch, "91330100MA2RSK0002").await;
    p.caught_up().await;
    let mine_only = ListHeldChargesRequest { merchant_id: m.merchant_id.clone(), ..Default::default() };
    assert!(held(&ch, Some(&other.api_key), mine_only).await.unwrap().is_empty());
    let bad = ListHeldChargesRequest { page_token: "nonsense".into(), ..Default::default() };
    let e = held(&ch, Some(&m.api_key), bad).await.unwrap_err();
    assert!(e.message().starts_with("page_token"), "{e:?}");

    // The payer's notice links the step-up page: the amount and the reason in plain words.
    let path = step_up_path(&ch, &contract, &big.charge_id).await;
    let (status, page) = http_get(p.http, &path).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(element_text(&page, "amount").as_deref(), Some("¥20.01"));
    assert!(element_text(&page, "why").unwrap().contains("200%"), "{page}");
    let (_, english) = http_get(p.http, &format!("{path}?lang=en")).await;
    assert!(english.contains("Confirm the charge"), "{english}");
    let code = element_text(&page, "code-hint").unwrap();
    // A wrong code, or a parameter the page does not take, changes nothing.
    let (status, wrong) = http_post(p.http, &format!("{path}/confirm"), "code=000000x").await;
    assert_eq!(status, 400, "{wrong}");
    let (status, _) = http_post(p.http, &format!("{path}/confirm?debug=1"), &format!("code={code}")).await;
    assert_eq!(status, 400);
    assert_eq!(charge(&ch, &big.charge_id).await.unwrap().state, ChargeState::Held as i32);
    let (status, _) = http_get(p.http, "/holds/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404);

    // The right code releases it: it goes to the provider and succeeds.
    let (status, answer) = http_post(p.http, &format!("{path}/confirm"), &format!("code={code}")).await;
    assert_eq!(status, 303, "{answer}");
    let done = in_state(&ch, &big.charge_id, ChargeState::Succeeded).await;
    assert_eq!((done.amount.unwrap().minor_units, done.hold_released_by.as_str()), (2_001, "payer"));
    let (_, page) = http_get(p.http, &path).await;
    assert!(element_text(&page, "released").is_some(), "{page}");
    let (status, _) = http_post(p.http, &format!("{path}/confirm"), &format!("code={code}")).await;
    assert_eq!(status, 409, "released once");
    let list = held(&ch, Some(&m.api_key), ListHeldChargesRequest::default()).await.unwrap();
    assert_eq!((list[0].state, list[0].released_by.as_str()), (HoldState::Scheduled as i32, "payer"));

    // Counted once: the hold took the day's second charge and the release took none, so the
    // third is admitted and a fourth refused.
    let third = trigger(&ch, &m, &contract, 900, "r3").await;
    assert_eq!(third.outcome, TriggerOutcome::Scheduled as i32, "{third:?}");
    let fourth = trigger(&ch, &m, &contract, 900, "r4").await;
    assert_eq!((fourth.outcome, fourth.rule.as_str()), (TriggerOutcome::Rejected as i32, "daily_count"));
}

async fn a_held_charge_nobody_releases_is_rejected_after_48_hours_and_operators_review(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let (m, contract) = setup(&ch, "91330100MA2RSK0003", 10).await;

    // Three charges above twice the terms' 500 fen (no history yet), held.
    let lapses = trigger(&ch, &m, &contract, 1_001, "big-1").await;
    let approved = trigger(&ch, &m, &contract, 1_200, "big-2").await;
    let refused = trigger(&ch, &m, &contract, 1_300, "big-3").await;
    let declined = trigger(&ch, &m, &contract, 1_400, "big-4").await;
    for t in [&lapses, &approved, &refused, &declined] {
        assert_eq!(t.outcome, TriggerOutcome::Held as i32, "{t:?}");
        in_state(&ch, &t.charge_id, ChargeState::Held).await;
    }

    // Reviewing needs the operator's key, a decision, and a held charge.
    let req = ReviewHeldChargeRequest {
        charge_id: approved.charge_id.clone(),
        decision: HoldDecision::Approve as i32,
        note: String::new(),
    };
    let e = RiskServiceClient::new(ch.clone()).review_held_charge(authed(req, &m.api_key)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = review(&ch, &approved.charge_id, HoldDecision::Unspecified).await.unwrap_err();
    assert!(e.message().starts_with("decision"), "{e:?}");
    let ordinary = trigger(&ch, &m, &contract, 300, "small").await;
    assert_eq!(ordinary.outcome, TriggerOutcome::Scheduled as i32);
    let e = review(&ch, &ordinary.charge_id, HoldDecision::Approve).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // An operator approves one (charged) and rejects another.
    let h = review(&ch, &approved.charge_id, HoldDecision::Approve).await.unwrap();
    assert_eq!(
        (h.state, h.released_by.as_str(), h.note.as_str()),
        (HoldState::Scheduled as i32, "operator", "checked")
    );
    let c = in_state(&ch, &approved.charge_id, ChargeState::Succeeded).await;
    assert_eq!(c.hold_released_by, "operator");
    let h = review(&ch, &refused.charge_id, HoldDecision::Reject).await.unwrap();
    assert_eq!(h.state, HoldState::Rejected as i32);
    let c = in_state(&ch, &refused.charge_id, ChargeState::Rejected).await;
    assert_eq!(c.provider_code, "risk_review_rejected");
    let e = review(&ch, &refused.charge_id, HoldDecision::Approve).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The payer declines one on the step-up page: rejected at once.
    let path = step_up_path(&ch, &contract, &declined.charge_id).await;
    let (status, _) = http_post(p.http, &format!("{path}/decline"), "").await;
    assert_eq!(status, 303);
    let c = in_state(&ch, &declined.charge_id, ChargeState::Rejected).await;
    assert_eq!(c.provider_code, "risk_payer_declined");

    // Nobody releases the first: still held after 47 hours, rejected at 48.
    p.advance_seconds(47 * HOUR).await;
    p.settled().await;
    assert_eq!(charge(&ch, &lapses.charge_id).await.unwrap().state, ChargeState::Held as i32);
    let waiting = ListHeldChargesRequest { state: HoldState::Held as i32, ..Default::default() };
    let still = held(&ch, None, waiting.clone()).await.unwrap();
    assert_eq!(still.iter().map(|h| h.charge_id.as_str()).collect::<Vec<_>>(), [lapses.charge_id.as_str()]);
    p.advance_seconds(HOUR).await;
    let c = in_state(&ch, &lapses.charge_id, ChargeState::Rejected).await;
    assert_eq!(c.provider_code, "risk_hold_expired");
    assert!(held(&ch, None, waiting).await.unwrap().is_empty());
    let path = step_up_path(&ch, &contract, &lapses.charge_id).await;
    let (_, page) = http_get(p.http, &path).await;
    assert!(element_text(&page, "rejected").is_some(), "{page}");

    // Operators see every merchant's holds, a page at a time.
    let first_page = held(&ch, None, ListHeldChargesRequest { page_size: 3, ..Default::default() }).await.unwrap();
    assert_eq!(first_page.len(), 3);
    let all = held(&ch, None, ListHeldChargesRequest::default()).await.unwrap();
    assert_eq!(all.len(), 4);

    // Analytics: four held by the rule, one released by an operator, three rejected.
    eventually("analytics to hold the holds' outcomes", 30, || async {
        let req = authed(GetRiskOutcomesRequest::default(), &m.api_key);
        let rows = AnalyticsServiceClient::new(ch.clone()).get_risk_outcomes(req).await.ok()?.into_inner().holds;
        let [row] = rows.as_slice() else { return None };
        let figures =
            (row.rule.as_str(), row.held, row.released_by_payer, row.released_by_operator, row.rejected, row.open);
        (figures == ("charge_over_mean", 4, 0, 1, 3, 0)).then_some(())
    })
    .await;
}

async fn set_rule(ch: &Channel, key: &str, req: SetRiskRuleRequest) -> Result<RiskRule, tonic::Status> {
    let answer = RiskServiceClient::new(ch.clone()).set_risk_rule(authed(req, key)).await?;
    Ok(answer.into_inner().rule.unwrap())
}

fn rule_req(scope: RiskScope, merchant: &str, plan: &str, setting: &str, value: i64) -> SetRiskRuleRequest {
    SetRiskRuleRequest {
        scope: scope as i32,
        merchant_id: merchant.into(),
        plan_id: plan.into(),
        setting: setting.into(),
        value,
    }
}

async fn decisions(ch: &Channel, key: &str, req: ListRiskDecisionsRequest) -> Vec<RiskDecision> {
    let answer = RiskServiceClient::new(ch.clone()).list_risk_decisions(authed(req, key)).await.unwrap();
    answer.into_inner().decisions
}

fn input<'a>(d: &'a RiskDecision, name: &str) -> Option<&'a str> {
    d.inputs.iter().find(|i| i.name == name).map(|i| i.value.as_str())
}

async fn rules_are_data_within_the_platforms_floor_and_every_decision_is_audited(backend: Backend) {
    let p = run(backend).await;
    let ch = p.channel().await;
    let (m, rides, contract) = setup_plan(&ch, "91330100MA2RSK0004", 10).await;
    let threshold = "charge_over_mean.threshold_percent";

    // Bad settings name the field; nothing is recorded.
    let e = set_rule(&ch, &m.api_key, rule_req(RiskScope::Plan, "", &rides, threshold, 250)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("value: 250 is outside"), "{e:?}");
    let e = set_rule(&ch, &m.api_key, rule_req(RiskScope::Plan, "", &rides, "nope", 150)).await.unwrap_err();
    assert!(e.message().starts_with("setting: unknown setting"), "{e:?}");
    let e = set_rule(&ch, &m.api_key, rule_req(RiskScope::Platform, "", "", threshold, 150)).await.unwrap_err();
    assert!(e.message().starts_with("scope"), "{e:?}");
    let e = set_rule(&ch, &m.api_key, rule_req(RiskScope::Unspecified, "", "", threshold, 150)).await.unwrap_err();
    assert!(e.message().starts_with("scope"), "{e:?}");
    // Another merchant's plan does not exist for it.
    let other = onboard(&ch, "91330100MA2RSK0005").await;
    p.caught_up().await;
    let e = set_rule(&ch, &other.api_key, rule_req(RiskScope::Plan, "", &rides, threshold, 150)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mine = RiskServiceClient::new(ch.clone())
        .list_risk_rules(authed(
            ListRiskRulesRequest { merchant_id: String::new(), plan_id: rides.clone() },
            &other.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(mine.code(), Code::NotFound);

    // The merchant makes its plan stricter: 150% of the mean.
    let set = set_rule(&ch, &m.api_key, rule_req(RiskScope::Plan, "", &rides, threshold, 150)).await.unwrap();
    assert_eq!((set.value, set.source, set.loosest, set.strictest), (150, RiskScope::Plan as i32, 200, 110));
    let in_force = eventually("the plan's threshold in force", 30, || async {
        let req = ListRiskRulesRequest { merchant_id: String::new(), plan_id: rides.clone() };
        let rules = RiskServiceClient::new(ch.clone()).list_risk_rules(authed(req, &m.api_key)).await.ok()?;
        rules.into_inner().rules.into_iter().find(|r| r.setting == threshold && r.value == 150)
    })
    .await;
    assert_eq!(in_force.source, RiskScope::Plan as i32);

    // 751 is above 150% of the terms' 500: held under the plan's threshold.
    let ok = trigger(&ch, &m, &contract, 750, "t1").await;
    assert_eq!(ok.outcome, TriggerOutcome::Scheduled as i32, "{ok:?}");
    let big = trigger(&ch, &m, &contract, 751, "t2").await;
    assert_eq!(big.outcome, TriggerOutcome::Held as i32, "{big:?}");
    assert!(big.detail.contains("751 > 150% of 500"), "{}", big.detail);

    // The operator makes the merchant's signing stricter: one payer account per device.
    let req = rule_req(RiskScope::Merchant, &m.merchant_id, "", "device_accounts.max_accounts", 1);
    set_rule(&ch, p.operator_key(), req).await.unwrap();
    p.caught_up().await;
    let session = |payer: &str| CreateSigningSessionRequest {
        plan_id: m.plan_id.clone(),
        payer_id: payer.into(),
        channel: SigningChannel::H5 as i32,
        device_id: "one-phone".into(),
        client_ip: "192.0.2.30".into(),
        return_url: "https://merchant.example/done".into(),
        ..Default::default()
    };
    let mut contracts = ContractsServiceClient::new(ch.clone());
    let first = contracts.create_signing_session(authed(session("payer-s1"), &m.api_key)).await.unwrap();
    assert_eq!(first.into_inner().session.unwrap().state, SigningState::Open as i32);
    let second = contracts.create_signing_session(authed(session("payer-s2"), &m.api_key)).await.unwrap();
    let second = second.into_inner().session.unwrap();
    assert_eq!(second.state, SigningState::HeldForReview as i32, "{second:?}");

    // The audit: the sign-time decision by payer, with its rule and inputs…
    let by_payer = ListRiskDecisionsRequest { payer_id: "payer-s2".into(), ..Default::default() };
    let found = eventually("the sign-time decision in the audit", 30, || async {
        let d = decisions(&ch, &m.api_key, by_payer.clone()).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    let d = &found[0];
    assert_eq!(
        (d.rule.as_str(), d.outcome.as_str(), d.session_id.as_str()),
        ("device_accounts", "held_for_review", second.session_id.as_str())
    );
    assert_eq!((input(d, "accounts"), input(d, "max_accounts")), (Some("2"), Some("1")));
    // …and the charge-time ones by contract: held, then rejected by the operator.
    review(&ch, &big.charge_id, HoldDecision::Reject).await.unwrap();
    let by_contract = ListRiskDecisionsRequest { contract_id: contract.clone(), ..Default::default() };
    let trail = decisions(&ch, &m.api_key, by_contract.clone()).await;
    let outcomes: Vec<&str> = trail.iter().map(|d| d.outcome.as_str()).collect();
    assert_eq!(outcomes, ["rejected_by_operator", "held"], "newest first");
    assert_eq!((input(&trail[1], "threshold_percent"), input(&trail[1], "amount")), (Some("150"), Some("751")));
    // Another merchant sees none of it; the operator sees it all, a page at a time.
    assert!(decisions(&ch, &other.api_key, by_contract.clone()).await.is_empty());
    let page = ListRiskDecisionsRequest { contract_id: contract.clone(), page_size: 1, ..Default::default() };
    let answer = RiskServiceClient::new(ch.clone()).list_risk_decisions(support::op(page.clone())).await.unwrap();
    let answer = answer.into_inner();
    assert_eq!(answer.decisions.len(), 1);
    let next = ListRiskDecisionsRequest { page_token: answer.next_page_token, ..page };
    let rest = decisions(&ch, p.operator_key(), next).await;
    assert_eq!(rest.iter().map(|d| d.outcome.as_str()).collect::<Vec<_>>(), ["held"]);
    let bad = ListRiskDecisionsRequest { payer_id: "bad payer id with spaces".into(), ..Default::default() };
    let e = RiskServiceClient::new(ch.clone()).list_risk_decisions(support::op(bad)).await.unwrap_err();
    assert!(e.message().starts_with("payer_id"), "{e:?}");
}

async fn a_release_at_night_waits_for_the_window_and_a_stopped_contract_is_not_charged(backend: Backend) {
    use autodebit_proto::contracts::v1::TerminateContractRequest;
    use autodebit_proto::events::v1::TerminationMode;
    let p = run(backend).await;
    let ch = p.channel().await;
    let (m, contract) = setup(&ch, "91330100MA2RSK0006", 10).await;
    // The test clock starts at 10:00 Beijing time; both held at once.
    let night = trigger(&ch, &m, &contract, 1_001, "night").await;
    let stopped = trigger(&ch, &m, &contract, 1_002, "stopped").await;
    for t in [&night, &stopped] {
        assert_eq!(t.outcome, TriggerOutcome::Held as i32, "{t:?}");
    }
    let t0 = eventually("the first hold", 30, || async {
        held(&ch, None, ListHeldChargesRequest::default()).await.ok()?.into_iter().map(|h| h.held_at_ms).min()
    })
    .await;

    // Approved at 23:00, outside the charge window: released, charged at 07:00.
    p.advance_seconds(13 * HOUR).await;
    let h = review(&ch, &night.charge_id, HoldDecision::Approve).await.unwrap();
    assert_eq!((h.state, h.charge_at_ms), (HoldState::Released as i32, t0 + 21 * HOUR * 1000), "{h:?}");
    p.settled().await;
    assert_eq!(charge(&ch, &night.charge_id).await.unwrap().state, ChargeState::Held as i32, "not before 07:00");
    p.advance_seconds(8 * HOUR).await;
    let c = in_state(&ch, &night.charge_id, ChargeState::Succeeded).await;
    assert_eq!(c.hold_released_by, "operator");

    // The contract ends while the other is held: confirming it rejects it instead.
    let end = TerminateContractRequest {
        contract_id: contract.clone(),
        mode: TerminationMode::Merchant as i32,
        remark: "service closed".into(),
        expected_version: None,
    };
    ContractsServiceClient::new(ch.clone()).terminate_contract(authed(end, &m.api_key)).await.unwrap();
    p.caught_up().await;
    let path = step_up_path(&ch, &contract, &stopped.charge_id).await;
    let (_, page) = http_get(p.http, &path).await;
    let code = element_text(&page, "code-hint").unwrap();
    let (status, answer) = http_post(p.http, &format!("{path}/confirm"), &format!("code={code}")).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("the charge is rejected"), "{answer}");
    let c = in_state(&ch, &stopped.charge_id, ChargeState::Rejected).await;
    assert_eq!(c.provider_code, "contract_state");
}
