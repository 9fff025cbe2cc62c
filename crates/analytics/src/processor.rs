//! The analytics log follower: projects every event into the read models (`store`), in the
//! transaction that moves its checkpoint, so each event is counted exactly once.
use crate::store::{self, Batch, Names, Statement};
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};
use serde_json::json;
use std::collections::HashMap;

/// Projects into the tables `names` says: the live follower writes them all in place; a
/// rebuild writes some of them into their shadows.
#[derive(Default)]
pub struct Projector {
    pub names: Names,
}

/// A fixed amount per cycle as a month's worth (minor units): a year is twelve months, a
/// month 365/12 days; 0 for no fixed amount.
/// The projector's name: its checkpoint and its lease.
pub const NAME: &str = "analytics.projections";

pub fn monthly_amount(amount: Option<&pb::Money>, cycle: i32) -> (i64, String) {
    let Some(m) = codec::money_from_pb(amount).ok() else { return (0, String::new()) };
    let a = m.minor_units();
    let monthly = match pb::Cycle::try_from(cycle).unwrap_or(pb::Cycle::Unspecified) {
        pb::Cycle::Daily => a * 365 / 12,
        pb::Cycle::Weekly => a * 365 / (7 * 12),
        pb::Cycle::Monthly | pb::Cycle::Unspecified => a,
        pb::Cycle::Quarterly => a / 3,
        pb::Cycle::Yearly => a / 12,
    };
    (monthly, m.currency().to_string())
}

pub fn step_name(step: i32) -> &'static str {
    use pb::SigningStep as S;
    match S::try_from(step).unwrap_or(S::Unspecified) {
        S::PageViewed => "page_viewed",
        S::AgreementTicked => "agreement_ticked",
        S::HeldForReview => "held_for_review",
        S::ReviewApproved => "review_approved",
        S::ReviewRejected => "review_rejected",
        S::SmsRequired => "sms_required",
        S::SmsVerified => "sms_verified",
        S::Confirmed => "confirmed",
        S::Abandoned => "abandoned",
        S::Expired => "expired",
        S::Unspecified => "",
    }
}

pub fn channel_name(channel: i32) -> &'static str {
    match pb::SigningChannel::try_from(channel).unwrap_or(pb::SigningChannel::Unspecified) {
        pb::SigningChannel::H5 | pb::SigningChannel::Unspecified => "h5",
        pb::SigningChannel::MiniProgram => "mini_program",
        pb::SigningChannel::App => "app",
    }
}

fn reason_name(reason: i32) -> &'static str {
    match pb::ChargeReason::try_from(reason).unwrap_or(pb::ChargeReason::Unspecified) {
        pb::ChargeReason::Usage => "usage",
        pb::ChargeReason::Trigger => "triggered",
        pb::ChargeReason::Cycle | pb::ChargeReason::Unspecified => "cycle",
    }
}

fn delivery_name(outcome: i32) -> &'static str {
    match pb::DeliveryOutcome::try_from(outcome).unwrap_or(pb::DeliveryOutcome::Unspecified) {
        pb::DeliveryOutcome::Sent => "sent",
        pb::DeliveryOutcome::Delivered => "delivered",
        pb::DeliveryOutcome::Refused => "refused",
        pb::DeliveryOutcome::Failed => "failed",
        pb::DeliveryOutcome::Undelivered => "undelivered",
        pb::DeliveryOutcome::Unspecified => "",
    }
}

fn notice_kind_name(kind: i32) -> String {
    pb::NoticeKind::try_from(kind)
        .map(|k| k.as_str_name().trim_start_matches("NOTICE_KIND_").to_ascii_lowercase())
        .unwrap_or_default()
}

/// A batch's signing steps, folded per session in log order into what they change of the
/// session's row when applied one after another to a row that has none of them yet: each
/// step's first time (and the first page view's device), the last confirmation's contract, and
/// the first step that ends the session. One row per session then updates the table once,
/// where a row per step took as many statements as the batch has steps of one session.
#[derive(Default)]
pub struct SessionSteps {
    order: Vec<String>,
    folded: HashMap<String, Folded>,
}

#[derive(Default)]
struct Folded {
    viewed: i64,
    device: Option<String>,
    ticked: i64,
    held: i64,
    sms: i64,
    confirmed: i64,
    contract: Option<String>,
    outcome: &'static str,
}

impl SessionSteps {
    pub fn take(&mut self, s: &pb::SigningStepRecorded) {
        let f = match self.folded.get_mut(&s.session_id) {
            Some(f) => f,
            None => {
                self.order.push(s.session_id.clone());
                self.folded.entry(s.session_id.clone()).or_default()
            }
        };
        let first = |at: &mut i64| {
            if *at == 0 {
                *at = s.at_ms;
            }
        };
        let name = step_name(s.step);
        match name {
            "page_viewed" => {
                if f.viewed == 0 {
                    f.viewed = s.at_ms;
                    f.device = Some(s.detail.clone());
                }
            }
            "agreement_ticked" => first(&mut f.ticked),
            "held_for_review" => first(&mut f.held),
            "sms_required" => first(&mut f.sms),
            "confirmed" => {
                first(&mut f.confirmed);
                f.contract = Some(s.detail.clone());
            }
            _ => {}
        }
        if f.outcome.is_empty() {
            f.outcome = match name {
                "confirmed" => "signed",
                "abandoned" => "abandoned",
                "expired" => "expired",
                "review_rejected" => "rejected",
                _ => "",
            };
        }
    }

    /// The rows of [`Statement::SessionStep`], sessions in the order their first step came.
    pub fn rows(mut self) -> impl Iterator<Item = serde_json::Value> {
        self.order.into_iter().filter_map(move |id| {
            let f = self.folded.remove(&id)?;
            Some(json!([id, f.viewed, f.device, f.ticked, f.held, f.sms, f.confirmed, f.contract, f.outcome]))
        })
    }
}

impl Projector {
    /// The zones of the merchants whose charges the batch settles: applied in the batch, or
    /// kept before it.
    async fn zones(&self, tx: &mut Tx, events: &[Decoded]) -> anyhow::Result<HashMap<String, String>> {
        let mut zones = HashMap::new();
        let mut wanted = Vec::new();
        for d in events {
            match &d.kind {
                EventKind::ChargeSucceeded(s) => wanted.push(s.merchant_id.clone()),
                EventKind::ChargeFailed(f) => wanted.push(f.merchant_id.clone()),
                _ => {}
            }
        }
        wanted.sort();
        wanted.dedup();
        if !wanted.is_empty() && self.names.writes("analytics_charges") {
            zones.extend(store::zones(tx, &self.names, wanted).await?);
        }
        for d in events {
            if let EventKind::MerchantApplied(m) = &d.kind {
                zones.insert(m.merchant_id.clone(), m.time_zone.clone());
            }
        }
        Ok(zones)
    }
}

impl Processor for Projector {
    type Prepared = ();

    fn name(&self) -> &'static str {
        NAME
    }

    /// Five times the others': with a writer of its own (SQLite), fewer, larger transactions
    /// keep it closer behind a burst (docs/benchmarks.md).
    fn batch(&self) -> i64 {
        5_000
    }

    fn background(&self) -> bool {
        true
    }

    /// Every event: the projections count them all (`events_projected`).
    fn event_types(&self) -> &'static [&'static str] {
        &[]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        self.project(tx, events).await
    }
}

impl Projector {
    /// Writes `events` into the tables, in `tx`.
    pub async fn project(&self, tx: &mut Tx, events: &[Decoded]) -> anyhow::Result<()> {
        let names = &self.names;
        let zones = self.zones(tx, events).await?;
        let hour = |merchant: &str, at: i64| {
            i64::from(autodebit_domain::clock::local_hour(at, zones.get(merchant).map(String::as_str).unwrap_or("")))
        };
        let mut notices = Vec::new();
        let mut steps = SessionSteps::default();
        let mut batch = Batch::default();
        for d in events {
            let (statement, row) = match &d.kind {
                EventKind::MerchantApplied(m) => (Statement::Merchant, json!([m.merchant_id, m.industry, m.time_zone])),
                EventKind::ContractSigned(s) => {
                    let (monthly, currency) = monthly_amount(s.amount_per_cycle.as_ref(), s.cycle);
                    let row =
                        json!([s.contract_id, s.merchant_id, s.plan_id, s.payer_id, s.signed_at_ms, currency, monthly]);
                    (Statement::ContractSigned, row)
                }
                EventKind::ContractModified(m) if m.amount_per_cycle.is_some() => {
                    let (monthly, _) = monthly_amount(m.amount_per_cycle.as_ref(), m.cycle);
                    (Statement::ContractAmount, json!([m.contract_id, monthly]))
                }
                EventKind::ContractTerminated(t) => {
                    (Statement::ContractState, json!([t.contract_id, "terminated", t.terminated_at_ms]))
                }
                EventKind::ContractExpired(e) => {
                    (Statement::ContractState, json!([e.contract_id, "expired", e.expired_at_ms]))
                }
                EventKind::ContractSuspended(s) => (Statement::ContractState, json!([s.contract_id, "suspended", 0])),
                EventKind::ContractResumed(r) => (Statement::ContractState, json!([r.contract_id, "active", 0])),
                EventKind::ContractZombieFlagged(z) => {
                    (Statement::ContractZombie, json!([z.contract_id, z.flagged_at_ms]))
                }
                EventKind::ChargeScheduled(s) => {
                    let amount = codec::money_from_pb(s.amount.as_ref()).ok();
                    let row = json!([
                        s.charge_id,
                        s.contract_id,
                        s.merchant_id,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        s.due_at_ms,
                        reason_name(s.reason),
                    ]);
                    (Statement::ChargeScheduled, row)
                }
                EventKind::ChargeSucceeded(s) => {
                    let h = hour(&s.merchant_id, s.succeeded_at_ms);
                    (Statement::ChargeOutcome, json!([s.charge_id, "succeeded", "", s.succeeded_at_ms, h, 0]))
                }
                EventKind::ChargeFailed(f) => {
                    let h = hour(&f.merchant_id, f.failed_at_ms);
                    (Statement::ChargeOutcome, json!([f.charge_id, "failed", f.provider_code, f.failed_at_ms, h, 1]))
                }
                EventKind::ChargeRetryScheduled(r) => {
                    (Statement::ChargeOutcome, json!([r.charge_id, "scheduled", "", r.scheduled_at_ms, -1, 0]))
                }
                EventKind::ChargeHeld(h) => {
                    let amount = codec::money_from_pb(h.amount.as_ref()).ok();
                    let row = json!([
                        h.charge_id,
                        h.merchant_id,
                        h.contract_id,
                        h.rule,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        h.mean_minor_units,
                        h.threshold_percent,
                        h.held_at_ms
                    ]);
                    (Statement::HoldOpened, row)
                }
                EventKind::ChargeHoldReleased(r) => {
                    (Statement::HoldDecided, json!([r.charge_id, "released", r.released_by, r.released_at_ms]))
                }
                EventKind::ComplaintFiled(c) => {
                    let (charged, currency) =
                        c.charged.as_ref().map_or((0, String::new()), |m| (m.minor_units, m.currency.clone()));
                    let row = json!([
                        c.complaint_id,
                        c.charge_id,
                        c.contract_id,
                        c.merchant_id,
                        c.kind,
                        c.source,
                        charged,
                        currency,
                        c.filed_at_ms,
                        c.deadline_at_ms
                    ]);
                    (Statement::ComplaintFiled, row)
                }
                EventKind::ComplaintAnswered(a) => {
                    let row =
                        json!([a.complaint_id, a.answer, a.answered_at_ms, i64::from(a.late), a.refund_minor_units]);
                    (Statement::ComplaintAnswered, row)
                }
                EventKind::ComplaintDeadlineMissed(m) => {
                    (Statement::ComplaintMissed, json!([m.complaint_id, m.penalty, m.missed_at_ms]))
                }
                EventKind::ChargeRejected(r) => {
                    // A held charge's rejection decides its hold (a charge never held has no
                    // hold row, and the update changes nothing).
                    batch.push(Statement::HoldDecided, json!([r.charge_id, "rejected", r.rule, r.rejected_at_ms]));
                    // Refused at issue, a charge has no row yet.
                    let amount = codec::money_from_pb(r.amount.as_ref()).ok();
                    let row = json!([
                        r.charge_id,
                        r.contract_id,
                        r.merchant_id,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        r.rule,
                        r.due_at_ms,
                        r.rejected_at_ms
                    ]);
                    (Statement::ChargeRejected, row)
                }
                EventKind::SigningSessionOpened(o) => {
                    let row = json!([
                        o.session_id,
                        o.merchant_id,
                        o.plan_id,
                        o.payer_id,
                        channel_name(o.channel),
                        o.device_id,
                        o.opened_at_ms
                    ]);
                    (Statement::SessionOpened, row)
                }
                EventKind::SigningStepRecorded(s) => {
                    steps.take(s);
                    continue;
                }
                EventKind::NoticeRecorded(n) => {
                    notices.push(json!([n.contract_id]));
                    let row =
                        json!([n.notice_id, n.merchant_id, n.contract_id, notice_kind_name(n.kind), n.recorded_at_ms]);
                    (Statement::NoticeRecorded, row)
                }
                EventKind::NoticeDeliveryRecorded(n) => {
                    (Statement::NoticeDelivery, json!([n.notice_id, n.channel, delivery_name(n.outcome), n.at_ms]))
                }
                EventKind::NoticeOpened(n) => (Statement::NoticeOpened, json!([n.notice_id, n.at_ms])),
                EventKind::NoticeConverted(n) => (Statement::NoticeConverted, json!([n.notice_id, n.at_ms])),
                // A duplicate debit's refund is not revenue given back (the debit never counted).
                EventKind::RefundRequested(r) if r.duplicate_out_trade_no.is_empty() => {
                    let amount = codec::money_from_pb(r.amount.as_ref()).ok();
                    let row = json!([
                        r.refund_id,
                        r.charge_id,
                        r.merchant_id,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        r.requested_at_ms
                    ]);
                    (Statement::RefundRequested, row)
                }
                EventKind::RefundSucceeded(r) => {
                    (Statement::RefundOutcome, json!([r.refund_id, "succeeded", r.succeeded_at_ms]))
                }
                EventKind::RefundFailed(r) => {
                    (Statement::RefundOutcome, json!([r.refund_id, "failed", r.failed_at_ms]))
                }
                EventKind::SettlementBatchClosed(b) => (
                    Statement::Settlement,
                    json!([
                        b.batch_id,
                        b.merchant_id,
                        b.currency,
                        b.business_date,
                        b.closed_at_ms,
                        b.lines.len(),
                        b.gross,
                        b.refunds,
                        b.fees,
                        b.splits,
                        b.net
                    ]),
                ),
                // Keyed by merchant and opening time: a merchant may be reviewed again later.
                EventKind::MerchantReviewOpened(r) => (
                    Statement::ReviewOpened,
                    json!([
                        format!("{}|{}", r.merchant_id, r.opened_at_ms),
                        r.merchant_id,
                        r.opened_at_ms,
                        r.reason,
                        r.refunds,
                        r.charges,
                        r.rate_basis_points
                    ]),
                ),
                EventKind::MerchantReviewResolved(r) => {
                    (Statement::ReviewResolved, json!([r.merchant_id, r.resolved_at_ms]))
                }
                _ => continue,
            };
            batch.push(statement, row);
        }
        for row in steps.rows() {
            batch.push(Statement::SessionStep, row);
        }
        batch.write(tx, names).await?;
        store::bump(tx, names, "notices_recorded", notices.len() as i64).await?;
        // Each merchant's own count, through the contract the notice is about.
        store::count_merchant_notices(tx, names, notices).await?;
        store::bump(tx, names, "events_projected", events.len() as i64).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(minor_units: i64) -> pb::Money {
        pb::Money { minor_units, currency: "CNY".into() }
    }

    #[test]
    fn a_cycles_amount_as_a_months_worth() {
        let m = |a: i64, c: pb::Cycle| monthly_amount(Some(&cny(a)), c as i32).0;
        assert_eq!(m(1_990, pb::Cycle::Monthly), 1_990);
        assert_eq!(m(12_000, pb::Cycle::Yearly), 1_000);
        assert_eq!(m(3_000, pb::Cycle::Quarterly), 1_000);
        assert_eq!(m(100, pb::Cycle::Daily), 3_041, "365 days a year, 12 months");
        assert_eq!(m(700, pb::Cycle::Weekly), 3_041);
        assert_eq!(monthly_amount(None, pb::Cycle::Monthly as i32), (0, String::new()), "usage plans have none");
        assert_eq!(monthly_amount(Some(&cny(500)), pb::Cycle::Monthly as i32).1, "CNY");
    }

    #[test]
    fn a_sessions_steps_fold_into_one_row_as_if_applied_in_turn() {
        let step = |session: &str, step: pb::SigningStep, at_ms: i64, detail: &str| pb::SigningStepRecorded {
            session_id: session.into(),
            step: step as i32,
            at_ms,
            detail: detail.into(),
            ..Default::default()
        };
        let mut steps = SessionSteps::default();
        for s in [
            step("s2", pb::SigningStep::Expired, 5, ""),
            step("s1", pb::SigningStep::PageViewed, 10, "ios"),
            step("s1", pb::SigningStep::PageViewed, 11, "android"),
            step("s1", pb::SigningStep::Abandoned, 12, ""),
            step("s1", pb::SigningStep::Confirmed, 13, "ct-1"),
            step("s1", pb::SigningStep::Confirmed, 14, "ct-2"),
        ] {
            steps.take(&s);
        }
        let rows: Vec<String> = steps.rows().map(|r| r.to_string()).collect();
        assert_eq!(
            rows,
            [r#"["s2",0,null,0,0,0,0,null,"expired"]"#, r#"["s1",10,"ios",0,0,0,13,"ct-2","abandoned"]"#,],
            "first times, the first view's device, the last confirmation's contract, the first ending"
        );
    }

    #[test]
    fn names_of_steps_channels_and_outcomes() {
        assert_eq!(step_name(pb::SigningStep::AgreementTicked as i32), "agreement_ticked");
        assert_eq!(channel_name(pb::SigningChannel::MiniProgram as i32), "mini_program");
        assert_eq!(delivery_name(pb::DeliveryOutcome::Delivered as i32), "delivered");
        assert_eq!(notice_kind_name(pb::NoticeKind::ChargeFailed as i32), "charge_failed");
    }
}
