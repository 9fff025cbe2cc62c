//! What issuing a charge or a pre-debit notice appends, shared by the due loop and
//! TriggerCharge. The limits are the schedule's (`Schedule::admit`), checked and counted on
//! the schedule row the transaction holds, so no two charges can both take the last slot.
use crate::store::PlanCharges;
use autodebit_domain::charge::{Charge, ChargeCommand, Issue, Origin, Reason};
use autodebit_domain::limits::{self, Limits};
use autodebit_domain::schedule::{Schedule, Side};
use autodebit_domain::{Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StreamAppend};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, ChargeReason};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::repository::{self, Loaded};

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

/// The append that issues `issue` — `ChargeScheduled`, or `ChargeRejected` naming the rule
/// and figures when `admitted` is a breach — decided by the charge aggregate through the
/// repository, and whether it was admitted. The due loop appends it with the batch's notices.
pub fn charge_append(
    issue: Issue,
    admitted: Result<(), limits::Breach>,
    reason: Reason,
    description: &str,
    cause: &Cause,
    now: Timestamp,
) -> (StreamAppend, bool) {
    let ok = admitted.is_ok();
    let stream = issue.charge_id.stream();
    let command = match admitted {
        Ok(()) => ChargeCommand::Schedule {
            charge_id: issue.charge_id,
            contract_id: issue.contract_id,
            merchant_id: issue.merchant_id,
            payer_id: issue.payer_id,
            amount: issue.amount,
            period: issue.period,
            due_at: issue.due_at,
            origin: Origin { reason, description: description.to_string() },
        },
        Err(breach) => {
            ChargeCommand::Reject { issue: Some(issue), rule: breach.rule.to_string(), detail: breach.detail }
        }
    };
    let new = Loaded { state: None, version: 0 };
    // Deciding on a charge that does not exist yet cannot fail for either command.
    let append = match repository::decide::<Charge>(stream.clone(), new, command, now, cause) {
        Ok(decided) => decided.into_append(),
        Err(_) => StreamAppend { stream, expected: ExpectedVersion::NoStream, events: vec![] },
    };
    (append, ok)
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
