//! Events on the wire and in the log: protobuf `Event` payloads with `Metadata`, and the
//! conversions between domain values and their protobuf form.
use autodebit_domain::charge::{Charge, ChargeEvent, Issue, Origin, Reason};
use autodebit_domain::contract::{Contract, ContractEvent, TerminationMode};
use autodebit_domain::usage::{DEFAULT_GRACE_MINUTES, PriceTier, UsagePricing};
use autodebit_domain::{ChargeId, ContractId, Currency, Cycle, MerchantId, Money, PayerId, clock::from_millis};
use autodebit_eventstore::{NewEvent, RecordedEvent};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use prost::Message;

pub mod complaint;
pub mod merchant;
pub mod plan;
pub mod signing;
pub mod webhook;

/// Where an event came from: carried in its metadata so that a follower's effects can be
/// traced to their cause.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    pub correlation_id: String,
    pub causation_id: String,
}

impl Cause {
    /// The cause of effects of `event`: same correlation, caused by that event.
    pub fn of(event: &crate::Decoded) -> Self {
        let correlation_id = if event.meta.correlation_id.is_empty() {
            event.meta.event_id.clone()
        } else {
            event.meta.correlation_id.clone()
        };
        Cause { correlation_id, causation_id: event.meta.event_id.clone() }
    }

    /// The cause of a request's effects.
    pub fn request(request_id: impl Into<String>) -> Self {
        let id = request_id.into();
        Cause { correlation_id: id.clone(), causation_id: id }
    }
}

/// Encodes an event for the log, stamping metadata (ids, trace context, domain time).
pub fn encode(event: pb::Event, cause: &Cause, occurred_at_ms: i64) -> NewEvent {
    let event_id = uuid::Uuid::now_v7();
    let meta = pb::Metadata {
        event_id: event_id.to_string(),
        correlation_id: if cause.correlation_id.is_empty() {
            event_id.to_string()
        } else {
            cause.correlation_id.clone()
        },
        causation_id: cause.causation_id.clone(),
        traceparent: crate::telemetry::current_traceparent().unwrap_or_default(),
        occurred_at_ms,
    };
    NewEvent {
        event_id,
        event_type: event.type_name().to_string(),
        payload: event.encode_to_vec(),
        metadata: meta.encode_to_vec(),
        recorded_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// Decodes a recorded event; `None` for bytes that are not an `Event`.
pub fn decode(record: RecordedEvent) -> Option<crate::Decoded> {
    let event = pb::Event::decode(record.payload.as_slice()).ok()?;
    let meta = pb::Metadata::decode(record.metadata.as_slice()).unwrap_or_default();
    let kind = event.kind?;
    Some(crate::Decoded { stream: record.stream, version: record.version, kind, meta })
}

// === money, cycles ===

pub fn money_to_pb(m: Money) -> pb::Money {
    pb::Money { minor_units: m.minor_units(), currency: m.currency().to_string() }
}

/// Money from its protobuf form; the error names what is wrong.
pub fn money_from_pb(m: Option<&pb::Money>) -> Result<Money, String> {
    let m = m.ok_or_else(|| "is required".to_string())?;
    let currency = Currency::parse(&m.currency).map_err(|e| format!("currency: {e}"))?;
    Ok(Money::new(m.minor_units, currency))
}

pub fn cycle_to_pb(c: Cycle) -> pb::Cycle {
    match c {
        Cycle::Daily => pb::Cycle::Daily,
        Cycle::Weekly => pb::Cycle::Weekly,
        Cycle::Monthly => pb::Cycle::Monthly,
        Cycle::Quarterly => pb::Cycle::Quarterly,
        Cycle::Yearly => pb::Cycle::Yearly,
    }
}

pub fn cycle_from_pb(raw: i32) -> Option<Cycle> {
    match pb::Cycle::try_from(raw).ok()? {
        pb::Cycle::Unspecified => None,
        pb::Cycle::Daily => Some(Cycle::Daily),
        pb::Cycle::Weekly => Some(Cycle::Weekly),
        pb::Cycle::Monthly => Some(Cycle::Monthly),
        pb::Cycle::Quarterly => Some(Cycle::Quarterly),
        pb::Cycle::Yearly => Some(Cycle::Yearly),
    }
}

/// A plan's usage pricing; `plan_cycle` is the plan's own cycle, the usage period when the
/// pricing names none (hybrid plans default to monthly). `None` for an unknown cycle value.
pub fn usage_from_pb(
    u: &pb::UsagePricing,
    mode: pb::ChargeMode,
    plan_cycle: Option<Cycle>,
) -> Result<UsagePricing, &'static str> {
    let cycle = match (u.cycle, mode) {
        (0, pb::ChargeMode::Hybrid) => Cycle::Monthly,
        (0, _) => plan_cycle.unwrap_or(Cycle::Monthly),
        (raw, _) => cycle_from_pb(raw).ok_or("usage.cycle")?,
    };
    Ok(UsagePricing {
        unit: u.unit.clone(),
        tiers: u
            .tiers
            .iter()
            .map(|t| PriceTier { up_to: (t.up_to > 0).then_some(t.up_to), unit_price: t.unit_price })
            .collect(),
        grace_minutes: if u.grace_minutes == 0 { DEFAULT_GRACE_MINUTES } else { u.grace_minutes },
        cycle,
    })
}

pub fn usage_to_pb(u: &UsagePricing) -> pb::UsagePricing {
    pb::UsagePricing {
        unit: u.unit.clone(),
        tiers: u
            .tiers
            .iter()
            .map(|t| pb::PriceTier { up_to: t.up_to.unwrap_or(0), unit_price: t.unit_price })
            .collect(),
        grace_minutes: u.grace_minutes,
        cycle: cycle_to_pb(u.cycle) as i32,
    }
}

pub fn termination_mode_to_pb(m: TerminationMode) -> pb::TerminationMode {
    match m {
        TerminationMode::Payer => pb::TerminationMode::Payer,
        TerminationMode::Merchant => pb::TerminationMode::Merchant,
        TerminationMode::CustomerService => pb::TerminationMode::CustomerService,
        TerminationMode::Provider => pb::TerminationMode::Provider,
        TerminationMode::Platform => pb::TerminationMode::Platform,
    }
}

pub fn termination_mode_from_pb(raw: i32) -> Option<TerminationMode> {
    match pb::TerminationMode::try_from(raw).ok()? {
        pb::TerminationMode::Unspecified => None,
        pb::TerminationMode::Payer => Some(TerminationMode::Payer),
        pb::TerminationMode::Merchant => Some(TerminationMode::Merchant),
        pb::TerminationMode::CustomerService => Some(TerminationMode::CustomerService),
        pb::TerminationMode::Provider => Some(TerminationMode::Provider),
        pb::TerminationMode::Platform => Some(TerminationMode::Platform),
    }
}

// === contract events ===

/// The protobuf form of a contract event. Events after signing repeat the contract's id and
/// payer so that followers need no lookup; `contract` is the state the event applies to.
pub fn contract_event_to_pb(contract: Option<&Contract>, e: &ContractEvent) -> Option<pb::Event> {
    let ids = || contract.map(|c| (c.contract_id.to_string(), c.payer_id.to_string()));
    let kind = match e {
        ContractEvent::Signed {
            contract_id,
            merchant_id,
            payer_id,
            amount_per_cycle,
            cycle,
            merchant_contract_code,
            plan_id,
            expires_at,
            signed_at,
            payer_phone,
            language,
        } => EventKind::ContractSigned(pb::ContractSigned {
            contract_id: contract_id.to_string(),
            merchant_id: merchant_id.to_string(),
            payer_id: payer_id.to_string(),
            amount_per_cycle: Some(money_to_pb(*amount_per_cycle)),
            cycle: cycle_to_pb(*cycle) as i32,
            signed_at_ms: signed_at.timestamp_millis(),
            merchant_contract_code: merchant_contract_code.clone(),
            plan_id: plan_id.clone(),
            expires_at_ms: expires_at.map(|t| t.timestamp_millis()).unwrap_or(0),
            payer_phone: payer_phone.clone(),
            language: language.clone(),
        }),
        ContractEvent::Terminated { contract_id, mode, remark, terminated_at } => {
            EventKind::ContractTerminated(pb::ContractTerminated {
                contract_id: contract_id.to_string(),
                mode: termination_mode_to_pb(*mode) as i32,
                remark: remark.clone(),
                terminated_at_ms: terminated_at.timestamp_millis(),
                payer_id: contract.map(|c| c.payer_id.to_string()).unwrap_or_default(),
            })
        }
        ContractEvent::Modified { amount_per_cycle, cycle, effective_at, notice, at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractModified(pb::ContractModified {
                contract_id,
                amount_per_cycle: Some(money_to_pb(*amount_per_cycle)),
                cycle: cycle_to_pb(*cycle) as i32,
                effective_at_ms: effective_at.timestamp_millis(),
                notice: notice.clone(),
                modified_at_ms: at.timestamp_millis(),
                payer_id,
            })
        }
        ContractEvent::Suspended { reason, at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractSuspended(pb::ContractSuspended {
                contract_id,
                reason: reason.clone(),
                suspended_at_ms: at.timestamp_millis(),
                payer_id,
            })
        }
        ContractEvent::Resumed { at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractResumed(pb::ContractResumed {
                contract_id,
                resumed_at_ms: at.timestamp_millis(),
                payer_id,
            })
        }
        ContractEvent::Expired { at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractExpired(pb::ContractExpired {
                contract_id,
                expired_at_ms: at.timestamp_millis(),
                payer_id,
            })
        }
        ContractEvent::ZombieFlagged { idle_since, at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractZombieFlagged(pb::ContractZombieFlagged {
                contract_id,
                idle_since_ms: idle_since.timestamp_millis(),
                flagged_at_ms: at.timestamp_millis(),
                payer_id,
            })
        }
        ContractEvent::ExpiryWarned { expires_at, at } => {
            let (contract_id, payer_id) = ids()?;
            EventKind::ContractExpiring(pb::ContractExpiring {
                contract_id,
                payer_id,
                expires_at_ms: expires_at.timestamp_millis(),
                warned_at_ms: at.timestamp_millis(),
            })
        }
    };
    Some(pb::Event { kind: Some(kind) })
}

/// The domain form of a contract event; `None` for other events or damaged ones.
pub fn contract_event_from_pb(kind: &EventKind) -> Option<ContractEvent> {
    let opt_time = |ms: i64| (ms != 0).then(|| from_millis(ms));
    match kind {
        EventKind::ContractSigned(s) => Some(ContractEvent::Signed {
            contract_id: ContractId::parse(&s.contract_id).ok()?,
            merchant_id: MerchantId::parse(&s.merchant_id).ok()?,
            payer_id: PayerId::parse(&s.payer_id).ok()?,
            amount_per_cycle: money_from_pb(s.amount_per_cycle.as_ref()).ok()?,
            cycle: cycle_from_pb(s.cycle)?,
            merchant_contract_code: s.merchant_contract_code.clone(),
            plan_id: s.plan_id.clone(),
            expires_at: opt_time(s.expires_at_ms),
            signed_at: from_millis(s.signed_at_ms),
            payer_phone: s.payer_phone.clone(),
            language: s.language.clone(),
        }),
        EventKind::ContractTerminated(t) => Some(ContractEvent::Terminated {
            contract_id: ContractId::parse(&t.contract_id).ok()?,
            mode: termination_mode_from_pb(t.mode)?,
            remark: t.remark.clone(),
            terminated_at: from_millis(t.terminated_at_ms),
        }),
        EventKind::ContractModified(m) => Some(ContractEvent::Modified {
            amount_per_cycle: money_from_pb(m.amount_per_cycle.as_ref()).ok()?,
            cycle: cycle_from_pb(m.cycle)?,
            effective_at: from_millis(m.effective_at_ms),
            notice: m.notice.clone(),
            at: from_millis(m.modified_at_ms),
        }),
        EventKind::ContractSuspended(s) => {
            Some(ContractEvent::Suspended { reason: s.reason.clone(), at: from_millis(s.suspended_at_ms) })
        }
        EventKind::ContractResumed(r) => Some(ContractEvent::Resumed { at: from_millis(r.resumed_at_ms) }),
        EventKind::ContractExpired(e) => Some(ContractEvent::Expired { at: from_millis(e.expired_at_ms) }),
        EventKind::ContractZombieFlagged(z) => Some(ContractEvent::ZombieFlagged {
            idle_since: from_millis(z.idle_since_ms),
            at: from_millis(z.flagged_at_ms),
        }),
        EventKind::ContractExpiring(w) => Some(ContractEvent::ExpiryWarned {
            expires_at: from_millis(w.expires_at_ms),
            at: from_millis(w.warned_at_ms),
        }),
        _ => None,
    }
}

// === charge events ===

fn reason_to_pb(r: Reason) -> pb::ChargeReason {
    match r {
        Reason::Cycle => pb::ChargeReason::Cycle,
        Reason::Usage => pb::ChargeReason::Usage,
        Reason::Trigger => pb::ChargeReason::Trigger,
    }
}

/// A charge's reason as logged; charges logged before reasons were recorded were cycle charges.
pub fn reason_from_pb(raw: i32) -> Reason {
    match pb::ChargeReason::try_from(raw) {
        Ok(pb::ChargeReason::Usage) => Reason::Usage,
        Ok(pb::ChargeReason::Trigger) => Reason::Trigger,
        _ => Reason::Cycle,
    }
}

/// The protobuf form of a charge event. Outcome events repeat the charge's contract, merchant
/// and amount so that followers need no lookup; `charge` is the state the event applies to.
pub fn charge_event_to_pb(charge: Option<&Charge>, e: &ChargeEvent) -> Option<pb::Event> {
    let kind = match e {
        ChargeEvent::Scheduled { charge_id, contract_id, merchant_id, payer_id, amount, period, due_at, origin } => {
            EventKind::ChargeScheduled(pb::ChargeScheduled {
                charge_id: charge_id.to_string(),
                contract_id: contract_id.to_string(),
                merchant_id: merchant_id.to_string(),
                payer_id: payer_id.to_string(),
                amount: Some(money_to_pb(*amount)),
                period: *period,
                due_at_ms: due_at.timestamp_millis(),
                reason: reason_to_pb(origin.reason) as i32,
                description: origin.description.clone(),
            })
        }
        ChargeEvent::Succeeded { provider_transaction_id, at } => {
            let c = charge?;
            EventKind::ChargeSucceeded(pb::ChargeSucceeded {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                amount: Some(money_to_pb(c.amount)),
                provider_transaction_id: provider_transaction_id.clone(),
                succeeded_at_ms: at.timestamp_millis(),
                payer_id: c.payer_id.to_string(),
                out_trade_no: c.out_trade_no.clone().unwrap_or_default(),
            })
        }
        ChargeEvent::Failed { provider_code, message, retryable, at } => {
            let c = charge?;
            EventKind::ChargeFailed(pb::ChargeFailed {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                amount: Some(money_to_pb(c.amount)),
                provider_code: provider_code.clone(),
                message: message.clone(),
                retryable: *retryable,
                failed_at_ms: at.timestamp_millis(),
                payer_id: c.payer_id.to_string(),
                attempt: c.attempt,
            })
        }
        ChargeEvent::AttemptStarted { attempt, out_trade_no, provider, at } => {
            let c = charge?;
            EventKind::ChargeAttemptStarted(pb::ChargeAttemptStarted {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                payer_id: c.payer_id.to_string(),
                amount: Some(money_to_pb(c.amount)),
                attempt: *attempt,
                out_trade_no: out_trade_no.clone(),
                provider: provider.clone(),
                started_at_ms: at.timestamp_millis(),
            })
        }
        ChargeEvent::RefundRequested { refund_id, amount, reason, duplicate, at } => {
            let c = charge?;
            EventKind::RefundRequested(pb::RefundRequested {
                refund_id: refund_id.clone(),
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                payer_id: c.payer_id.to_string(),
                amount: Some(money_to_pb(*amount)),
                reason: reason.clone(),
                out_refund_no: refund_id.clone(),
                requested_at_ms: at.timestamp_millis(),
                duplicate_out_trade_no: duplicate.as_ref().map(|d| d.out_trade_no.clone()).unwrap_or_default(),
                duplicate_transaction_id: duplicate.as_ref().map(|d| d.transaction_id.clone()).unwrap_or_default(),
            })
        }
        ChargeEvent::RefundSucceeded { refund_id, provider_refund_id, at } => {
            let c = charge?;
            EventKind::RefundSucceeded(pb::RefundSucceeded {
                refund_id: refund_id.clone(),
                charge_id: c.charge_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                amount: c.refund(refund_id).map(|r| money_to_pb(r.amount)),
                provider_refund_id: provider_refund_id.clone(),
                succeeded_at_ms: at.timestamp_millis(),
                payer_id: c.payer_id.to_string(),
                duplicate: c.refund(refund_id).is_some_and(|r| r.duplicate.is_some()),
            })
        }
        ChargeEvent::RefundFailed { refund_id, provider_code, message, at } => {
            let c = charge?;
            EventKind::RefundFailed(pb::RefundFailed {
                refund_id: refund_id.clone(),
                charge_id: c.charge_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                amount: c.refund(refund_id).map(|r| money_to_pb(r.amount)),
                provider_code: provider_code.clone(),
                message: message.clone(),
                failed_at_ms: at.timestamp_millis(),
                payer_id: c.payer_id.to_string(),
            })
        }
        ChargeEvent::RetryScheduled { attempt, at } => {
            let c = charge?;
            EventKind::ChargeRetryScheduled(pb::ChargeRetryScheduled {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                payer_id: c.payer_id.to_string(),
                amount: Some(money_to_pb(c.amount)),
                attempt: *attempt,
                scheduled_at_ms: at.timestamp_millis(),
            })
        }
        ChargeEvent::Rejected { issue, rule, detail, at } => EventKind::ChargeRejected(pb::ChargeRejected {
            charge_id: issue.charge_id.to_string(),
            contract_id: issue.contract_id.to_string(),
            merchant_id: issue.merchant_id.to_string(),
            rule: rule.clone(),
            detail: detail.clone(),
            rejected_at_ms: at.timestamp_millis(),
            payer_id: issue.payer_id.to_string(),
            amount: Some(money_to_pb(issue.amount)),
            period: issue.period,
            due_at_ms: issue.due_at.timestamp_millis(),
        }),
        ChargeEvent::Held { issue, origin, reason, token, expires_at, at } => EventKind::ChargeHeld(pb::ChargeHeld {
            charge_id: issue.charge_id.to_string(),
            contract_id: issue.contract_id.to_string(),
            merchant_id: issue.merchant_id.to_string(),
            payer_id: issue.payer_id.to_string(),
            amount: Some(money_to_pb(issue.amount)),
            period: issue.period,
            due_at_ms: issue.due_at.timestamp_millis(),
            reason: reason_to_pb(origin.reason) as i32,
            description: origin.description.clone(),
            rule: reason.rule.clone(),
            detail: reason.detail.clone(),
            mean_minor_units: reason.mean,
            threshold_percent: reason.threshold_percent,
            history_count: reason.history_count,
            token: token.clone(),
            expires_at_ms: expires_at.timestamp_millis(),
            held_at_ms: at.timestamp_millis(),
        }),
        ChargeEvent::HoldReleased { by, note, at } => {
            let c = charge?;
            EventKind::ChargeHoldReleased(pb::ChargeHoldReleased {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                payer_id: c.payer_id.to_string(),
                amount: Some(money_to_pb(c.amount)),
                released_by: by.as_str().to_string(),
                note: note.clone(),
                released_at_ms: at.timestamp_millis(),
            })
        }
    };
    Some(pb::Event { kind: Some(kind) })
}

pub fn charge_event_from_pb(kind: &EventKind) -> Option<ChargeEvent> {
    match kind {
        EventKind::ChargeScheduled(s) => Some(ChargeEvent::Scheduled {
            charge_id: ChargeId::parse(&s.charge_id).ok()?,
            contract_id: ContractId::parse(&s.contract_id).ok()?,
            merchant_id: MerchantId::parse(&s.merchant_id).ok()?,
            payer_id: PayerId::parse(&s.payer_id).ok()?,
            amount: money_from_pb(s.amount.as_ref()).ok()?,
            period: s.period,
            due_at: from_millis(s.due_at_ms),
            origin: Origin { reason: reason_from_pb(s.reason), description: s.description.clone() },
        }),
        EventKind::ChargeSucceeded(s) => Some(ChargeEvent::Succeeded {
            provider_transaction_id: s.provider_transaction_id.clone(),
            at: from_millis(s.succeeded_at_ms),
        }),
        EventKind::ChargeFailed(f) => Some(ChargeEvent::Failed {
            provider_code: f.provider_code.clone(),
            message: f.message.clone(),
            retryable: f.retryable,
            at: from_millis(f.failed_at_ms),
        }),
        EventKind::ChargeRetryScheduled(r) => {
            Some(ChargeEvent::RetryScheduled { attempt: r.attempt, at: from_millis(r.scheduled_at_ms) })
        }
        EventKind::RefundRequested(r) => Some(ChargeEvent::RefundRequested {
            refund_id: r.refund_id.clone(),
            amount: money_from_pb(r.amount.as_ref()).ok()?,
            reason: r.reason.clone(),
            duplicate: (!r.duplicate_out_trade_no.is_empty()).then(|| autodebit_domain::charge::Duplicate {
                out_trade_no: r.duplicate_out_trade_no.clone(),
                transaction_id: r.duplicate_transaction_id.clone(),
            }),
            at: from_millis(r.requested_at_ms),
        }),
        EventKind::RefundSucceeded(r) => Some(ChargeEvent::RefundSucceeded {
            refund_id: r.refund_id.clone(),
            provider_refund_id: r.provider_refund_id.clone(),
            at: from_millis(r.succeeded_at_ms),
        }),
        EventKind::RefundFailed(r) => Some(ChargeEvent::RefundFailed {
            refund_id: r.refund_id.clone(),
            provider_code: r.provider_code.clone(),
            message: r.message.clone(),
            at: from_millis(r.failed_at_ms),
        }),
        EventKind::ChargeAttemptStarted(a) => Some(ChargeEvent::AttemptStarted {
            attempt: a.attempt,
            out_trade_no: a.out_trade_no.clone(),
            provider: a.provider.clone(),
            at: from_millis(a.started_at_ms),
        }),
        EventKind::ChargeRejected(r) => Some(ChargeEvent::Rejected {
            issue: Issue {
                charge_id: ChargeId::parse(&r.charge_id).ok()?,
                contract_id: ContractId::parse(&r.contract_id).ok()?,
                merchant_id: MerchantId::parse(&r.merchant_id).ok()?,
                payer_id: PayerId::parse(&r.payer_id).ok()?,
                amount: money_from_pb(r.amount.as_ref()).ok()?,
                period: r.period,
                due_at: from_millis(r.due_at_ms),
            },
            rule: r.rule.clone(),
            detail: r.detail.clone(),
            at: from_millis(r.rejected_at_ms),
        }),
        EventKind::ChargeHeld(h) => Some(ChargeEvent::Held {
            issue: Issue {
                charge_id: ChargeId::parse(&h.charge_id).ok()?,
                contract_id: ContractId::parse(&h.contract_id).ok()?,
                merchant_id: MerchantId::parse(&h.merchant_id).ok()?,
                payer_id: PayerId::parse(&h.payer_id).ok()?,
                amount: money_from_pb(h.amount.as_ref()).ok()?,
                period: h.period,
                due_at: from_millis(h.due_at_ms),
            },
            origin: Origin { reason: reason_from_pb(h.reason), description: h.description.clone() },
            reason: autodebit_domain::risk::HoldReason {
                rule: h.rule.clone(),
                detail: h.detail.clone(),
                mean: h.mean_minor_units,
                threshold_percent: h.threshold_percent,
                history_count: h.history_count,
            },
            token: h.token.clone(),
            expires_at: from_millis(h.expires_at_ms),
            at: from_millis(h.held_at_ms),
        }),
        EventKind::ChargeHoldReleased(r) => Some(ChargeEvent::HoldReleased {
            by: autodebit_domain::risk::Releaser::parse(&r.released_by)?,
            note: r.note.clone(),
            at: from_millis(r.released_at_ms),
        }),
        _ => None,
    }
}

impl crate::repository::Stored for Contract {
    fn to_pb(before: &Option<Contract>, event: &ContractEvent) -> Option<pb::Event> {
        contract_event_to_pb(before.as_ref(), event)
    }

    fn from_pb(kind: &EventKind) -> Option<ContractEvent> {
        contract_event_from_pb(kind)
    }
}

impl crate::repository::Stored for Charge {
    fn to_pb(before: &Option<Charge>, event: &ChargeEvent) -> Option<pb::Event> {
        charge_event_to_pb(before.as_ref(), event)
    }

    fn from_pb(kind: &EventKind) -> Option<ChargeEvent> {
        charge_event_from_pb(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_events_round_trip() {
        let signed = ContractEvent::Signed {
            contract_id: ContractId::generate(),
            merchant_id: MerchantId::parse("m1").unwrap(),
            payer_id: PayerId::parse("p1").unwrap(),
            amount_per_cycle: Money::cny(1999),
            cycle: Cycle::Quarterly,
            merchant_contract_code: "c-9".into(),
            plan_id: "pl_1".into(),
            expires_at: Some(from_millis(1_800_000_000_000)),
            signed_at: from_millis(1_700_000_000_000),
            payer_phone: "+8613800138000".into(),
            language: "en".into(),
        };
        let Some(EventKind::ContractSigned(pb)) = contract_event_to_pb(None, &signed).unwrap().kind else {
            panic!("not a ContractSigned")
        };
        assert_eq!((pb.payer_phone.as_str(), pb.language.as_str()), ("+8613800138000", "en"));
        let contract = autodebit_domain::contract::apply(None, &signed);
        let warned = ContractEvent::ExpiryWarned {
            expires_at: from_millis(1_800_000_000_000),
            at: from_millis(1_800_000_000_000 - 7 * 86_400_000),
        };
        for e in [signed.clone(), warned.clone()] {
            let pb = contract_event_to_pb(contract.as_ref(), &e).unwrap();
            assert_eq!(contract_event_from_pb(pb.kind.as_ref().unwrap()), Some(e));
        }
        let Some(EventKind::ContractExpiring(w)) = contract_event_to_pb(contract.as_ref(), &warned).unwrap().kind
        else {
            panic!("not a ContractExpiring")
        };
        let c = contract.as_ref().unwrap();
        assert_eq!((w.contract_id, w.payer_id), (c.contract_id.to_string(), "p1".to_string()), "ids as other events");
        assert_eq!((w.expires_at_ms, w.warned_at_ms), (1_800_000_000_000, 1_800_000_000_000 - 7 * 86_400_000));
        assert!(contract_event_to_pb(None, &warned).is_none(), "a warning follows the signing");
    }

    #[test]
    fn a_contract_signed_without_a_session_logs_no_phone_or_language() {
        let e = ContractEvent::Signed {
            contract_id: ContractId::generate(),
            merchant_id: MerchantId::parse("m1").unwrap(),
            payer_id: PayerId::parse("p1").unwrap(),
            amount_per_cycle: Money::cny(1999),
            cycle: Cycle::Quarterly,
            merchant_contract_code: "c-9".into(),
            plan_id: "pl_1".into(),
            expires_at: Some(from_millis(1_800_000_000_000)),
            signed_at: from_millis(1_700_000_000_000),
            payer_phone: String::new(),
            language: String::new(),
        };
        let pb = contract_event_to_pb(None, &e).unwrap();
        let Some(EventKind::ContractSigned(s)) = &pb.kind else { panic!("not a ContractSigned") };
        assert!(s.payer_phone.is_empty() && s.language.is_empty());
        assert_eq!(contract_event_from_pb(pb.kind.as_ref().unwrap()), Some(e));
    }

    #[test]
    fn encoded_events_decode_with_metadata() {
        let e = contract_event_to_pb(
            None,
            &ContractEvent::Terminated {
                contract_id: ContractId::generate(),
                mode: TerminationMode::Merchant,
                remark: "r".into(),
                terminated_at: from_millis(5),
            },
        )
        .unwrap();
        let cause = Cause { correlation_id: "corr".into(), causation_id: "cause".into() };
        let new = encode(e.clone(), &cause, 77);
        assert_eq!(new.event_type, "ContractTerminated");
        let record = RecordedEvent {
            position: 1,
            transaction_id: 0,
            stream: "s".into(),
            version: 1,
            event_type: new.event_type.clone(),
            event_id: new.event_id,
            payload: new.payload,
            metadata: new.metadata,
            recorded_at_ms: 0,
        };
        let d = decode(record).unwrap();
        assert_eq!(Some(d.kind), e.kind);
        assert_eq!(d.meta.correlation_id, "corr");
        assert_eq!(d.meta.causation_id, "cause");
        assert_eq!(d.meta.occurred_at_ms, 77);
        assert_eq!(d.meta.event_id, new.event_id.to_string());
    }
}
