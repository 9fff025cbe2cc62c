//! What each event of the log calls for: the notice to its payer (kind, whom, the values its
//! template is filled with), the webhook event its merchant may receive, and the conversion it
//! may be of an earlier notice.
use autodebit_domain::notice::{Conversion, Language, NoticeKind};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec;
use std::collections::BTreeMap;

/// A value a template placeholder takes, written out in the notice's language and zone.
#[derive(Debug, Clone)]
pub enum Field {
    Text(String),
    Money(Option<pb::Money>),
    /// A moment, in milliseconds since the epoch.
    Time(i64),
    /// A page of the platform's, by its path: written out under the public URL.
    Page(String),
}

/// A notice an event calls for, before the merchant's settings are known.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub kind: NoticeKind,
    /// "" when the event does not name it (the notifier's contracts table does).
    pub merchant_id: String,
    /// "" when the event does not name the payer.
    pub payer_id: String,
    pub contract_id: String,
    pub charge_id: String,
    /// A phone the event itself carries (the SMS code's).
    pub phone: String,
    /// A language the event itself carries (the SMS code's).
    pub language: String,
    /// A zone the event itself carries (a pre-debit notice's).
    pub time_zone: String,
    pub fields: Vec<(&'static str, Field)>,
}

fn wanted(kind: NoticeKind, merchant: &str, payer: &str, contract: &str, charge: &str) -> Wanted {
    Wanted {
        kind,
        merchant_id: merchant.to_string(),
        payer_id: payer.to_string(),
        contract_id: contract.to_string(),
        charge_id: charge.to_string(),
        phone: String::new(),
        language: String::new(),
        time_zone: String::new(),
        fields: Vec::new(),
    }
}

/// The notice `event` calls for, if any. `terms` is what a signing notice states (the
/// contract's terms as the authorization page gave them).
pub fn notice_for(event: &EventKind, terms: impl FnOnce(&pb::ContractSigned) -> String) -> Option<Wanted> {
    use Field::*;
    Some(match event {
        EventKind::ContractSigned(s) => {
            let mut w = wanted(NoticeKind::ContractSigned, &s.merchant_id, &s.payer_id, &s.contract_id, "");
            w.fields.push(("terms", Text(terms(s))));
            w
        }
        EventKind::PreDebitNoticeIssued(n) => {
            let mut w = wanted(NoticeKind::PreDebit, &n.merchant_id, &n.payer_id, &n.contract_id, &n.charge_id);
            w.time_zone = n.time_zone.clone();
            w.fields.push(("amount", Money(n.estimated_amount.clone())));
            w.fields.push(("charge_time", Time(n.charge_due_at_ms)));
            w
        }
        EventKind::ChargeSucceeded(s) => {
            let mut w = wanted(NoticeKind::ChargeSucceeded, &s.merchant_id, &s.payer_id, &s.contract_id, &s.charge_id);
            w.fields.push(("amount", Money(s.amount.clone())));
            w.fields.push(("time", Time(s.succeeded_at_ms)));
            w
        }
        EventKind::ChargeFailed(f) => {
            let mut w = wanted(NoticeKind::ChargeFailed, &f.merchant_id, &f.payer_id, &f.contract_id, &f.charge_id);
            w.fields.push(("amount", Money(f.amount.clone())));
            w.fields.push(("time", Time(f.failed_at_ms)));
            let reason = if f.message.is_empty() { f.provider_code.clone() } else { f.message.clone() };
            w.fields.push(("reason", Text(reason)));
            w
        }
        EventKind::ChargeRetryScheduled(r) => {
            let mut w = wanted(NoticeKind::RetryScheduled, &r.merchant_id, &r.payer_id, &r.contract_id, &r.charge_id);
            w.fields.push(("amount", Money(r.amount.clone())));
            w.fields.push(("retry_time", Time(r.scheduled_at_ms)));
            w.fields.push(("attempt", Text(r.attempt.to_string())));
            w
        }
        EventKind::ContractModified(m) => {
            let mut w = wanted(NoticeKind::ContractModified, "", &m.payer_id, &m.contract_id, "");
            let changes = if m.notice.is_empty() {
                codec::money_from_pb(m.amount_per_cycle.as_ref()).map(|a| a.to_string()).unwrap_or_default()
            } else {
                m.notice.clone()
            };
            w.fields.push(("changes", Text(changes)));
            w.fields.push(("effective_time", Time(m.effective_at_ms)));
            w
        }
        EventKind::ContractSuspended(s) => {
            let mut w = wanted(NoticeKind::ContractSuspended, "", &s.payer_id, &s.contract_id, "");
            w.fields.push(("reason", Text(s.reason.clone())));
            w
        }
        EventKind::ContractResumed(r) => wanted(NoticeKind::ContractResumed, "", &r.payer_id, &r.contract_id, ""),
        EventKind::ContractExpiring(e) => {
            let mut w = wanted(NoticeKind::ContractExpiring, "", &e.payer_id, &e.contract_id, "");
            w.fields.push(("expiry_time", Time(e.expires_at_ms)));
            w
        }
        EventKind::ContractExpired(e) => wanted(NoticeKind::ContractExpired, "", &e.payer_id, &e.contract_id, ""),
        EventKind::ContractTerminated(t) => wanted(NoticeKind::ContractTerminated, "", &t.payer_id, &t.contract_id, ""),
        EventKind::ContractZombieFlagged(z) => {
            let mut w = wanted(NoticeKind::ContractZombie, "", &z.payer_id, &z.contract_id, "");
            w.fields.push(("idle_since", Time(z.idle_since_ms)));
            w
        }
        EventKind::RefundSucceeded(r) => {
            let mut w = wanted(NoticeKind::RefundSucceeded, &r.merchant_id, &r.payer_id, "", &r.charge_id);
            w.fields.push(("amount", Money(r.amount.clone())));
            w.fields.push(("time", Time(r.succeeded_at_ms)));
            w
        }
        EventKind::ChargeHeld(h) => {
            let mut w = wanted(NoticeKind::ChargeHeld, &h.merchant_id, &h.payer_id, &h.contract_id, &h.charge_id);
            w.fields.push(("amount", Money(h.amount.clone())));
            w.fields.push(("confirm_link", Page(format!("/holds/{}", h.token))));
            w.fields.push(("expiry_time", Time(h.expires_at_ms)));
            w
        }
        EventKind::ComplaintFiled(c) => {
            let mut w =
                wanted(NoticeKind::ComplaintReceived, &c.merchant_id, &c.payer_id, &c.contract_id, &c.charge_id);
            w.fields.push(("amount", Money(c.charged.clone())));
            w.fields.push(("deadline_time", Time(c.deadline_at_ms)));
            w
        }
        EventKind::VerificationCodeIssued(v) => {
            let mut w = wanted(NoticeKind::VerificationCode, &v.merchant_id, &v.payer_id, "", "");
            w.phone = v.phone.clone();
            w.language = v.language.clone();
            let minutes = ((v.expires_at_ms - v.issued_at_ms).max(0) / 60_000).max(1);
            w.fields.push(("code", Text(v.code.clone())));
            w.fields.push(("minutes", Text(minutes.to_string())));
            w
        }
        _ => return None,
    })
}

/// An amount as payers read it: yuan with the sign in Chinese (`¥12.50`), the currency code in
/// English (`CNY 12.50`); other currencies by code.
pub fn money_text(m: Option<&pb::Money>, language: Language) -> String {
    let Ok(m) = codec::money_from_pb(m) else { return String::new() };
    m.payer_text(language == Language::ZhCn)
}

/// A moment in `zone`, to the minute, naming the zone unless it is the default (Beijing time),
/// e.g. "2026-03-01 09:00 (Europe/London)".
pub fn time_text(at_ms: i64, zone: &str) -> String {
    use autodebit_domain::cycle::DEFAULT_ZONE;
    let at = autodebit_domain::clock::from_millis(at_ms);
    match autodebit_domain::cycle::zone(zone) {
        Ok(tz) if !zone.is_empty() && zone != DEFAULT_ZONE => {
            format!("{} ({zone})", at.with_timezone(&tz).format("%Y-%m-%d %H:%M"))
        }
        _ => at.with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// The values of a notice's placeholders, written out.
pub fn field_values(
    fields: &[(&'static str, Field)],
    language: Language,
    zone: &str,
    service_name: &str,
    merchant_name: &str,
    link: &str,
    public_url: &str,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = fields
        .iter()
        .map(|(name, f)| {
            let v = match f {
                Field::Text(t) => t.clone(),
                Field::Money(m) => money_text(m.as_ref(), language),
                Field::Time(t) => time_text(*t, zone),
                Field::Page(path) => format!("{public_url}{path}"),
            };
            (name.to_string(), v)
        })
        .collect();
    let service = if !service_name.is_empty() {
        match language {
            Language::ZhCn => format!("「{service_name}」"),
            Language::En => service_name.to_string(),
        }
    } else {
        match language {
            Language::ZhCn => String::new(),
            Language::En => "your service".to_string(),
        }
    };
    out.insert("service_name".into(), service);
    out.insert("merchant_name".into(), merchant_name.to_string());
    out.insert("link".into(), link.to_string());
    out
}

/// The conversions `event` may be of earlier notices about its contract (a successful charge
/// both pays after a failure and keeps an unused contract), the contract, and the event's type.
pub fn conversion_of(event: &EventKind) -> Option<(&'static [Conversion], &str, &'static str)> {
    match event {
        EventKind::ChargeSucceeded(s) => {
            Some((&[Conversion::Paid, Conversion::Kept], s.contract_id.as_str(), "ChargeSucceeded"))
        }
        EventKind::ContractResumed(r) => Some((&[Conversion::Resumed], r.contract_id.as_str(), "ContractResumed")),
        _ => None,
    }
}

/// The webhook event `event` is for its merchant: type, and `data` (snake_case, ids, amounts
/// in minor units). `merchant_id` is "" where the event does not name it.
pub fn webhook_for(event: &EventKind) -> Option<(&'static str, &str, &str, serde_json::Value)> {
    use serde_json::json;
    let money = |m: &Option<pb::Money>| match m {
        Some(m) => json!({"minor_units": m.minor_units, "currency": m.currency}),
        None => serde_json::Value::Null,
    };
    Some(match event {
        EventKind::ContractSigned(s) => (
            "contract.signed",
            s.merchant_id.as_str(),
            s.contract_id.as_str(),
            json!({"contract_id": s.contract_id, "payer_id": s.payer_id, "plan_id": s.plan_id,
                   "merchant_contract_code": s.merchant_contract_code, "amount_per_cycle": money(&s.amount_per_cycle),
                   "signed_at_ms": s.signed_at_ms, "expires_at_ms": s.expires_at_ms}),
        ),
        EventKind::ContractModified(m) => (
            "contract.modified",
            "",
            m.contract_id.as_str(),
            json!({"contract_id": m.contract_id, "payer_id": m.payer_id, "amount_per_cycle": money(&m.amount_per_cycle),
                   "effective_at_ms": m.effective_at_ms, "notice": m.notice, "modified_at_ms": m.modified_at_ms}),
        ),
        EventKind::ContractSuspended(s) => (
            "contract.suspended",
            "",
            s.contract_id.as_str(),
            json!({"contract_id": s.contract_id, "payer_id": s.payer_id, "reason": s.reason,
                   "suspended_at_ms": s.suspended_at_ms}),
        ),
        EventKind::ContractResumed(r) => (
            "contract.resumed",
            "",
            r.contract_id.as_str(),
            json!({"contract_id": r.contract_id, "payer_id": r.payer_id, "resumed_at_ms": r.resumed_at_ms}),
        ),
        EventKind::ContractExpiring(e) => (
            "contract.expiring",
            "",
            e.contract_id.as_str(),
            json!({"contract_id": e.contract_id, "payer_id": e.payer_id, "expires_at_ms": e.expires_at_ms}),
        ),
        EventKind::ContractExpired(e) => (
            "contract.expired",
            "",
            e.contract_id.as_str(),
            json!({"contract_id": e.contract_id, "payer_id": e.payer_id, "expired_at_ms": e.expired_at_ms}),
        ),
        EventKind::ContractTerminated(t) => (
            "contract.terminated",
            "",
            t.contract_id.as_str(),
            json!({"contract_id": t.contract_id, "payer_id": t.payer_id, "mode": termination_mode(t.mode),
                   "remark": t.remark, "terminated_at_ms": t.terminated_at_ms}),
        ),
        EventKind::ChargeScheduled(c) => (
            "charge.scheduled",
            c.merchant_id.as_str(),
            c.contract_id.as_str(),
            json!({"charge_id": c.charge_id, "contract_id": c.contract_id, "payer_id": c.payer_id,
                   "amount": money(&c.amount), "period": c.period, "due_at_ms": c.due_at_ms,
                   "description": c.description}),
        ),
        EventKind::ChargeSucceeded(s) => (
            "charge.succeeded",
            s.merchant_id.as_str(),
            s.contract_id.as_str(),
            json!({"charge_id": s.charge_id, "contract_id": s.contract_id, "payer_id": s.payer_id,
                   "amount": money(&s.amount), "provider_transaction_id": s.provider_transaction_id,
                   "succeeded_at_ms": s.succeeded_at_ms}),
        ),
        EventKind::ChargeFailed(f) => (
            "charge.failed",
            f.merchant_id.as_str(),
            f.contract_id.as_str(),
            json!({"charge_id": f.charge_id, "contract_id": f.contract_id, "payer_id": f.payer_id,
                   "amount": money(&f.amount), "provider_code": f.provider_code, "message": f.message,
                   "retryable": f.retryable, "attempt": f.attempt, "failed_at_ms": f.failed_at_ms}),
        ),
        EventKind::ChargeRejected(r) => (
            "charge.rejected",
            r.merchant_id.as_str(),
            r.contract_id.as_str(),
            json!({"charge_id": r.charge_id, "contract_id": r.contract_id, "payer_id": r.payer_id,
                   "amount": money(&r.amount), "rule": r.rule, "detail": r.detail,
                   "rejected_at_ms": r.rejected_at_ms}),
        ),
        EventKind::ChargeRetryScheduled(r) => (
            "charge.retry_scheduled",
            r.merchant_id.as_str(),
            r.contract_id.as_str(),
            json!({"charge_id": r.charge_id, "contract_id": r.contract_id, "payer_id": r.payer_id,
                   "amount": money(&r.amount), "attempt": r.attempt, "scheduled_at_ms": r.scheduled_at_ms}),
        ),
        EventKind::ChargeHeld(h) => (
            "charge.held",
            h.merchant_id.as_str(),
            h.contract_id.as_str(),
            json!({"charge_id": h.charge_id, "contract_id": h.contract_id, "payer_id": h.payer_id,
                   "amount": money(&h.amount), "rule": h.rule, "detail": h.detail,
                   "mean": h.mean_minor_units, "threshold_percent": h.threshold_percent,
                   "held_at_ms": h.held_at_ms, "expires_at_ms": h.expires_at_ms}),
        ),
        EventKind::ChargeHoldReleased(r) => (
            "charge.hold_released",
            r.merchant_id.as_str(),
            r.contract_id.as_str(),
            json!({"charge_id": r.charge_id, "contract_id": r.contract_id, "payer_id": r.payer_id,
                   "amount": money(&r.amount), "released_by": r.released_by,
                   "released_at_ms": r.released_at_ms}),
        ),
        EventKind::ComplaintFiled(c) => (
            "complaint.filed",
            c.merchant_id.as_str(),
            c.contract_id.as_str(),
            json!({"complaint_id": c.complaint_id, "charge_id": c.charge_id, "contract_id": c.contract_id,
                   "payer_id": c.payer_id, "kind": c.kind, "source": c.source, "description": c.description,
                   "deadline_at_ms": c.deadline_at_ms, "filed_at_ms": c.filed_at_ms}),
        ),
        EventKind::ComplaintAnswered(a) => (
            "complaint.answered",
            a.merchant_id.as_str(),
            "",
            json!({"complaint_id": a.complaint_id, "charge_id": a.charge_id, "payer_id": a.payer_id,
                   "answer": a.answer, "refund_minor_units": a.refund_minor_units, "late": a.late,
                   "answered_at_ms": a.answered_at_ms}),
        ),
        EventKind::ComplaintDeadlineMissed(m) => (
            "complaint.deadline_missed",
            m.merchant_id.as_str(),
            "",
            json!({"complaint_id": m.complaint_id, "charge_id": m.charge_id, "kind": m.kind,
                   "penalty": m.penalty, "missed_at_ms": m.missed_at_ms}),
        ),
        EventKind::RefundSucceeded(r) => (
            "refund.succeeded",
            r.merchant_id.as_str(),
            "",
            json!({"refund_id": r.refund_id, "charge_id": r.charge_id, "payer_id": r.payer_id,
                   "amount": money(&r.amount), "provider_refund_id": r.provider_refund_id,
                   "succeeded_at_ms": r.succeeded_at_ms}),
        ),
        EventKind::RefundFailed(r) => (
            "refund.failed",
            r.merchant_id.as_str(),
            "",
            json!({"refund_id": r.refund_id, "charge_id": r.charge_id, "provider_code": r.provider_code, "message": r.message,
                   "failed_at_ms": r.failed_at_ms}),
        ),
        EventKind::WebhookEndpointDisabled(d) => (
            "webhook_endpoint.disabled",
            d.merchant_id.as_str(),
            "",
            json!({"endpoint_id": d.endpoint_id, "reason": d.reason, "failing_since_ms": d.failing_since_ms,
                   "disabled_at_ms": d.at_ms}),
        ),
        _ => return None,
    })
}

fn termination_mode(mode: i32) -> &'static str {
    match pb::TerminationMode::try_from(mode) {
        Ok(pb::TerminationMode::Payer) => "payer",
        Ok(pb::TerminationMode::Merchant) => "merchant",
        Ok(pb::TerminationMode::Platform) => "platform",
        _ => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_yuan_and_times_in_the_merchants_zone() {
        let m = Some(pb::Money { minor_units: 1250, currency: "CNY".into() });
        assert_eq!(money_text(m.as_ref(), Language::ZhCn), "¥12.50");
        assert_eq!(money_text(m.as_ref(), Language::En), "CNY 12.50");
        // 2026-03-01 01:00 UTC is 09:00 in Beijing, 01:00 in London.
        let at = 1_772_326_800_000;
        assert_eq!(time_text(at, ""), "2026-03-01 09:00");
        assert_eq!(time_text(at, "Europe/London"), "2026-03-01 01:00 (Europe/London)");
    }

    #[test]
    fn every_notice_kind_but_the_code_has_a_webhook_or_is_about_a_contract() {
        let failed = EventKind::ChargeFailed(pb::ChargeFailed {
            charge_id: "ch_1".into(),
            contract_id: "ct_1".into(),
            merchant_id: "m_1".into(),
            amount: Some(pb::Money { minor_units: 990, currency: "CNY".into() }),
            provider_code: "NOTENOUGH".into(),
            ..Default::default()
        });
        let w = notice_for(&failed, |_| String::new()).unwrap();
        assert_eq!(w.kind, NoticeKind::ChargeFailed);
        assert_eq!(
            w.fields.iter().find(|(n, _)| *n == "reason").map(|(_, f)| format!("{f:?}")).unwrap(),
            "Text(\"NOTENOUGH\")"
        );
        let (ty, merchant, contract, data) = webhook_for(&failed).unwrap();
        assert_eq!((ty, merchant, contract), ("charge.failed", "m_1", "ct_1"));
        assert_eq!(data["amount"]["minor_units"], 990);
        for t in autodebit_domain::webhook::EVENT_TYPES {
            assert!(t.contains('.'), "{t}");
        }
        assert!(conversion_of(&failed).is_none());
    }
}
