//! What issuing a charge or a pre-debit notice appends, shared by the due loop and
//! TriggerCharge. The limits are the schedule's (`Schedule::admit`), checked and counted on
//! the schedule row the transaction holds, so no two charges can both take the last slot.
use crate::store::PlanCharges;
use autodebit_domain::charge::{Charge, ChargeCommand, Issue, Origin, Reason};
use autodebit_domain::limits::{self, Limits};
use autodebit_domain::risk::{self, HoldReason};
use autodebit_domain::schedule::{Schedule, Side};
use autodebit_domain::{Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StreamAppend};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, ChargeReason};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::repository::{self, Loaded};
use autodebit_runtime::risk_rules;

/// A contract's limits at `at`: its plan's, each default where the plan sets none.
pub fn limits_at(schedule: &Schedule, plan: Option<&PlanCharges>, at: Timestamp) -> Limits {
    let h = &schedule.history;
    limits::for_contract(plan.map(|p| p.limits), h.total_succeeded, h.first_success_at, at)
}

/// The parts of every charge of a schedule that do not change from one to the next.
pub fn base_issue(s: &Schedule) -> Issue {
    Issue {
        charge_id: Side::Cycle.charge_id(s.contract_id, 0),
        contract_id: s.contract_id,
        merchant_id: s.merchant_id.clone(),
        payer_id: s.payer_id.clone(),
        amount: s.amount,
        period: 0,
        due_at: s.fixed.next_due,
    }
}

pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Cycle => "period",
        Side::Usage => "usage",
    }
}

/// What becomes of a charge at issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Within the limits and the risk rules: it goes to the provider.
    Scheduled,
    /// Within the limits, but held by a risk rule (counted against the limits now, once).
    Held(HoldReason),
    Rejected(limits::Breach),
}

impl Admission {
    /// A charge the limits admitted, checked against the charge-time risk rule; a refused one
    /// stays refused.
    pub fn of(
        schedule: &Schedule,
        amount: Money,
        admitted: Result<(), limits::Breach>,
        rules: &risk_rules::Values,
    ) -> Admission {
        match admitted {
            Err(breach) => Admission::Rejected(breach),
            Ok(()) => match risk_hold(schedule, amount, rules) {
                Some(reason) => Admission::Held(reason),
                None => Admission::Scheduled,
            },
        }
    }

    /// Whether the limits admitted it (scheduled or held).
    pub fn admitted(&self) -> bool {
        !matches!(self, Admission::Rejected(_))
    }
}

/// Whether the charge-time risk rule holds a charge of `amount` on this contract: above the
/// threshold in force for its plan (`rules`) of the mean of its succeeded charges, or of its
/// terms' amount.
pub fn risk_hold(s: &Schedule, amount: Money, rules: &risk_rules::Values) -> Option<HoldReason> {
    let threshold = rules.effective(risk_rules::setting(risk::THRESHOLD_PERCENT), s.merchant_id.as_str(), &s.plan_id);
    risk::check_charge(&risk::ChargeFacts {
        amount: amount.minor_units(),
        succeeded_total: s.history.counted_total,
        succeeded_count: s.history.succeeded_count,
        expected: s.amount.minor_units(),
        threshold_percent: u32::try_from(threshold).unwrap_or(risk::DEFAULT_MEAN_THRESHOLD_PERCENT),
    })
}

/// A new hold's token: opens the payer's step-up page, so not guessable.
pub fn hold_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The append that issues `issue` — `ChargeScheduled`; `ChargeHeld` with the risk rule and its
/// inputs; or `ChargeRejected` naming the rule and figures of a breach — decided by the charge
/// aggregate through the repository. The due loop appends it with the batch's notices.
pub fn charge_append(
    issue: Issue,
    admission: Admission,
    reason: Reason,
    description: &str,
    cause: &Cause,
    now: Timestamp,
) -> StreamAppend {
    let stream = issue.charge_id.stream();
    let origin = Origin { reason, description: description.to_string() };
    let command = match admission {
        Admission::Held(hold) => ChargeCommand::Hold { issue, origin, reason: hold, token: hold_token() },
        Admission::Scheduled => ChargeCommand::Schedule {
            charge_id: issue.charge_id,
            contract_id: issue.contract_id,
            merchant_id: issue.merchant_id,
            payer_id: issue.payer_id,
            amount: issue.amount,
            period: issue.period,
            due_at: issue.due_at,
            origin,
        },
        Admission::Rejected(breach) => {
            ChargeCommand::Reject { issue: Some(issue), rule: breach.rule.to_string(), detail: breach.detail }
        }
    };
    let new = Loaded { state: None, version: 0 };
    // Deciding on a charge that does not exist yet cannot fail for any of the commands.
    match repository::decide::<Charge>(stream.clone(), new, command, now, cause) {
        Ok(decided) => decided.into_append(),
        Err(_) => StreamAppend { stream, expected: ExpectedVersion::NoStream, events: vec![] },
    }
}

/// The pre-debit notice of a coming charge, on its own stream (named after the charge), so
/// that it is given once. It names the charge's due time in the merchant's zone.
pub fn notice_append(
    s: &Schedule,
    side: Side,
    period: u32,
    estimated: i64,
    charge_due: Timestamp,
    at: Timestamp,
) -> StreamAppend {
    let charge_id = side.charge_id(s.contract_id, period);
    let reason = match side {
        Side::Cycle => ChargeReason::Cycle,
        Side::Usage => ChargeReason::Usage,
    };
    let at_ms = at.timestamp_millis();
    let event = pb::Event {
        kind: Some(EventKind::PreDebitNoticeIssued(pb::PreDebitNoticeIssued {
            charge_id: charge_id.to_string(),
            contract_id: s.contract_id.to_string(),
            merchant_id: s.merchant_id.to_string(),
            payer_id: s.payer_id.to_string(),
            reason: reason as i32,
            period,
            estimated_amount: Some(codec::money_to_pb(Money::new(estimated, s.amount.currency()))),
            charge_due_at_ms: charge_due.timestamp_millis(),
            issued_at_ms: at_ms,
            time_zone: s.zone.name().to_string(),
        })),
    };
    let cause = Cause::request(format!("{}/notice/{}/{period}", s.contract_id, side_name(side)));
    StreamAppend {
        stream: format!("prenotice-{charge_id}"),
        expected: ExpectedVersion::NoStream,
        events: vec![codec::encode(event, &cause, at_ms)],
    }
}
