//! Follows the log: a signed contract gets a schedule, a terminated, expired or suspended one
//! stops billing, a resumed or modified one moves on; plans, merchants, API keys, successes
//! and retryable failures are kept in the scheduler's tables.
use crate::store::{self, PlanRecord, decisions, schedules};
use autodebit_domain::clock::from_millis;
use autodebit_domain::cycle::DEFAULT_ZONE;
use autodebit_domain::limits::PlanLimits;
use autodebit_domain::plan::{ChargeMode, ModificationRule};
use autodebit_domain::schedule::{Opening, Schedule, ScheduleCommand, ScheduleError};
use autodebit_domain::{Aggregate, ContractId, Cycle, MerchantId, PayerId};
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};
use chrono::TimeDelta;

pub struct ContractFollower;

impl Processor for ContractFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "scheduler.contracts"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "ContractSigned",
            "ContractTerminated",
            "ContractExpired",
            "ContractSuspended",
            "ContractResumed",
            "ContractModified",
            "PlanCreated",
            "ChargeSucceeded",
            "ChargeFailed",
            "MerchantApplied",
            "MerchantReviewed",
            "ApiKeyIssued",
            "ApiKeyRevoked",
            "SigningStepRecorded",
            "RiskRuleSet",
            "ChargingFreezeChanged",
            "CreditScoreChanged",
        ]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        // Successes are written together, before any other event that follows them.
        let mut successes: Vec<(&str, i64, i64)> = Vec::new();
        for d in events {
            if let EventKind::ChargeSucceeded(c) = &d.kind {
                let amount = c.amount.as_ref().map(|m| m.minor_units).unwrap_or(0);
                successes.push((&c.contract_id, amount, c.succeeded_at_ms));
                continue;
            }
            schedules::record_successes(tx, std::mem::take(&mut successes)).await?;
            match &d.kind {
                EventKind::ContractSigned(s) => signed(tx, s).await?,
                EventKind::PlanCreated(p) => plan_created(tx, p).await?,
                EventKind::MerchantApplied(m) => {
                    let zone = if m.time_zone.is_empty() { DEFAULT_ZONE } else { m.time_zone.as_str() };
                    store::insert_merchant(tx, &m.merchant_id, zone).await?;
                }
                EventKind::MerchantReviewed(r) => {
                    let suspended = match pb::MerchantReviewOutcome::try_from(r.outcome) {
                        Ok(pb::MerchantReviewOutcome::Suspended) => true,
                        Ok(pb::MerchantReviewOutcome::Reinstated) => false,
                        _ => continue,
                    };
                    store::set_merchant_suspended(tx, &r.merchant_id, suspended).await?;
                }
                EventKind::ApiKeyIssued(_) | EventKind::ApiKeyRevoked(_) => {
                    autodebit_runtime::auth::follow_key_event(tx, "scheduler_api_keys", &d.kind).await?;
                }
                EventKind::ChargeFailed(f) if f.retryable => {
                    // The next attempt, on the plan's schedule and never sooner than six hours.
                    let gaps = store::retry_gaps(tx, &f.contract_id).await?;
                    let failures = f.attempt.max(1);
                    let Some(next) =
                        autodebit_domain::retry::next_attempt_at(from_millis(f.failed_at_ms), &gaps, failures)
                    else {
                        continue;
                    };
                    store::schedule_retry(tx, &f.charge_id, &f.contract_id, d.version, next).await?;
                }
                EventKind::ContractTerminated(t) => schedules::stop(tx, &[&t.contract_id]).await?,
                EventKind::ContractExpired(e) => schedules::stop(tx, &[&e.contract_id]).await?,
                EventKind::ContractSuspended(s) => schedules::stop(tx, &[&s.contract_id]).await?,
                EventKind::ContractResumed(r) => {
                    let at = from_millis(r.resumed_at_ms);
                    run(tx, &r.contract_id, ScheduleCommand::Resume { at }, at, false).await?
                }
                EventKind::ContractModified(m) => modified(tx, m).await?,
                EventKind::SigningStepRecorded(s) => signing_step(tx, s, &d.meta.event_id).await?,
                EventKind::ChargingFreezeChanged(f) => {
                    store::set_merchant_frozen(tx, &f.merchant_id, "frozen", f.frozen).await?
                }
                EventKind::CreditScoreChanged(c) => {
                    let frozen = autodebit_domain::credit::standing(c.score)
                        == autodebit_domain::credit::Standing::ChargingFrozen;
                    store::set_merchant_frozen(tx, &c.merchant_id, "credit_frozen", frozen).await?
                }
                EventKind::RiskRuleSet(r) => {
                    autodebit_runtime::risk_rules::write(tx, "scheduler_risk_rules", r).await?
                }
                _ => {}
            }
        }
        schedules::record_successes(tx, successes).await
    }
}

/// A signing session's risk decisions go to the audit; its confirmation makes them its
/// contract's.
async fn signing_step(tx: &mut Tx, s: &pb::SigningStepRecorded, event_id: &str) -> anyhow::Result<()> {
    use autodebit_domain::risk;
    use pb::SigningStep as S;
    let (rule, outcome) = match pb::SigningStep::try_from(s.step) {
        Ok(S::Confirmed) => return decisions::session_signed(tx, &s.session_id, &s.detail).await,
        Ok(S::HeldForReview) => (s.rule.as_str(), "held_for_review"),
        Ok(S::SmsRequired) => (s.rule.as_str(), "sms_required"),
        Ok(S::ReviewApproved) => (risk::DEVICE_ACCOUNTS, "review_approved"),
        Ok(S::ReviewRejected) => (risk::DEVICE_ACCOUNTS, "review_rejected"),
        _ => return Ok(()),
    };
    let decision = decisions::Decision {
        decision_id: event_id.to_string(),
        at_ms: s.at_ms,
        merchant_id: s.merchant_id.clone(),
        payer_id: s.payer_id.clone(),
        session_id: s.session_id.clone(),
        // Steps recorded before decisions named their rule name none.
        rule: if rule.is_empty() { "unrecorded".to_string() } else { rule.to_string() },
        inputs: decisions::inputs_json(s.inputs.iter().map(|i| (i.name.as_str(), i.value.clone()))),
        outcome: outcome.to_string(),
        detail: s.detail.clone(),
        ..Default::default()
    };
    decisions::insert(tx, &decision).await
}

/// Runs `command` against a contract's schedule and writes its new terms and position; a
/// calendar that runs out stops billing. With `lock`, the row is locked on PostgreSQL, so
/// that the due loop cannot move the schedule on between this read and the write (on SQLite
/// the single writer serialises, and a due batch decided on the old row is voided by the
/// revision).
async fn run(
    tx: &mut Tx,
    contract_id: &str,
    command: ScheduleCommand,
    now: chrono::DateTime<chrono::Utc>,
    lock: bool,
) -> anyhow::Result<()> {
    let Some(schedule) = schedules::get(&mut store::Db::Tx(tx), contract_id, lock).await? else { return Ok(()) };
    let state = Some(schedule);
    match Schedule::decide(&state, command, now) {
        Ok(events) => {
            let Some(after) = events.iter().fold(state, <Schedule as Aggregate>::apply) else { return Ok(()) };
            schedules::save_terms(tx, &after).await
        }
        Err(ScheduleError::CalendarEnded) => {
            tracing::error!(contract = contract_id, "the contract's calendar has no next period; billing stops");
            schedules::stop(tx, &[contract_id]).await
        }
        Err(e) => {
            tracing::error!(contract = contract_id, error = %e, "schedule not changed");
            Ok(())
        }
    }
}

/// New terms, from the period `domain::modification` says (`Schedule`'s `Modify`).
async fn modified(tx: &mut Tx, m: &pb::ContractModified) -> anyhow::Result<()> {
    let (Ok(amount), Some(cycle)) = (codec::money_from_pb(m.amount_per_cycle.as_ref()), codec::cycle_from_pb(m.cycle))
    else {
        return Ok(());
    };
    let Some(schedule) = schedules::get(&mut store::Db::Tx(tx), &m.contract_id, true).await? else { return Ok(()) };
    let rule = store::modification_rule(tx, &schedule.plan_id).await?;
    let effective_at = from_millis(m.effective_at_ms.max(m.modified_at_ms));
    let command = ScheduleCommand::Modify { amount, cycle, rule, effective_at };
    let state = Some(schedule);
    match Schedule::decide(&state, command, effective_at) {
        Ok(events) => match events.iter().fold(state, <Schedule as Aggregate>::apply) {
            Some(after) => schedules::save_terms(tx, &after).await,
            None => Ok(()),
        },
        Err(ScheduleError::CalendarEnded) => {
            tracing::error!(contract = m.contract_id, "modified calendar has no next period; billing stops");
            schedules::stop(tx, &[&m.contract_id]).await
        }
        Err(e) => {
            tracing::error!(contract = m.contract_id, error = %e, "modification not applied");
            Ok(())
        }
    }
}

/// A plan's terms, as the scheduler keeps them.
async fn plan_created(tx: &mut Tx, p: &pb::PlanCreated) -> anyhow::Result<()> {
    let Some(terms) = &p.terms else { return Ok(()) };
    let charge_mode = pb::ChargeMode::try_from(terms.charge_mode).unwrap_or_default();
    let mode = match charge_mode {
        pb::ChargeMode::Usage => ChargeMode::Usage,
        pb::ChargeMode::EventTriggered => ChargeMode::EventTriggered,
        pb::ChargeMode::Hybrid => ChargeMode::Hybrid,
        _ => ChargeMode::FixedCycle,
    };
    // The usage side's defaults (cycle, grace) as the plans service fills them in.
    let unpriced = pb::UsagePricing::default();
    let Ok(usage) =
        codec::usage_from_pb(terms.usage.as_ref().unwrap_or(&unpriced), charge_mode, codec::cycle_from_pb(terms.cycle))
    else {
        tracing::error!(plan = p.plan_id, "plan with an unknown usage cycle; not kept");
        return Ok(());
    };
    let record = PlanRecord {
        plan_id: p.plan_id.clone(),
        merchant_id: p.merchant_id.clone(),
        limits: PlanLimits {
            per_charge_cap: Some(terms.per_charge_cap.as_ref().map(|m| m.minor_units).unwrap_or(0)),
            daily_count: Some(terms.daily_count_limit),
            daily_amount: Some(terms.daily_amount_limit.as_ref().map(|m| m.minor_units).unwrap_or(0)),
        },
        first_charge_at_signing: terms.first_charge_at_signing,
        retry_gaps_hours: terms.retry_schedule_hours.clone(),
        mode,
        notice_lead_hours: autodebit_domain::plan::notice_lead_hours(terms.notice_lead_hours),
        usage,
        modification_rule: match pb::ModificationRule::try_from(terms.modification_rule) {
            Ok(pb::ModificationRule::Immediately) => ModificationRule::Immediately,
            _ => ModificationRule::NextCycle,
        },
    };
    store::insert_plan(tx, &record).await
}

/// A signed contract gets its schedule (`Schedule::open`), on its plan's terms and in its
/// merchant's calendar.
async fn signed(tx: &mut Tx, s: &pb::ContractSigned) -> anyhow::Result<()> {
    let Some(cycle) = codec::cycle_from_pb(s.cycle) else {
        tracing::error!(contract = s.contract_id, "signed contract without a cycle; not scheduled");
        return Ok(());
    };
    let Ok(amount) = codec::money_from_pb(s.amount_per_cycle.as_ref()) else {
        tracing::error!(contract = s.contract_id, "signed contract without an amount; not scheduled");
        return Ok(());
    };
    let (Ok(contract_id), Ok(merchant_id), Ok(payer_id)) =
        (ContractId::parse(&s.contract_id), MerchantId::parse(&s.merchant_id), PayerId::parse(&s.payer_id))
    else {
        tracing::error!(contract = s.contract_id, "signed contract with malformed ids; not scheduled");
        return Ok(());
    };
    let plan = store::plan_opening(tx, &s.plan_id).await?;
    let zone = store::merchant_zone(tx, &s.merchant_id).await?.unwrap_or_default();
    let opening = Opening {
        contract_id,
        merchant_id,
        payer_id,
        plan_id: s.plan_id.clone(),
        amount,
        cycle,
        signed_at: from_millis(s.signed_at_ms),
        expires_at: (s.expires_at_ms != 0).then(|| from_millis(s.expires_at_ms)),
        mode: schedules::mode_from_str(plan.as_ref().map_or("fixed", |p| p.mode.as_str())),
        zone: autodebit_domain::cycle::zone(&zone).unwrap_or(chrono_tz::Asia::Shanghai),
        notice_lead: autodebit_domain::plan::notice_lead(plan.as_ref().map(|p| p.notice_lead_hours)),
        first_charge_at_signing: plan.as_ref().is_some_and(|p| p.first_charge_at_signing != 0),
        usage_cycle: plan.as_ref().and_then(|p| schedules::cycle_from_str(&p.usage_cycle)).unwrap_or(Cycle::Monthly),
        usage_grace: TimeDelta::minutes(
            plan.as_ref().map_or(i64::from(autodebit_domain::usage::DEFAULT_GRACE_MINUTES), |p| p.usage_grace_minutes),
        ),
    };
    let at = opening.signed_at;
    let Ok(events) = Schedule::decide(&None, ScheduleCommand::Open(Box::new(opening)), at) else { return Ok(()) };
    match events.iter().fold(None, <Schedule as Aggregate>::apply) {
        Some(schedule) => schedules::insert(tx, &schedule).await,
        None => Ok(()),
    }
}
