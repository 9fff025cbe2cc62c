//! Random histories through the projector: written in batches of any sizes they leave the same
//! tables as one event at a time, and those tables say what a fold of the history from scratch
//! says (each charge's state and failures, each contract's state, each session's outcome, each
//! notice's first channel, each refund's state, each hold's outcome, each complaint's answer
//! and penalty, the events counted).
use crate::processor::Projector;
use autodebit_eventstore::{EventStore, StoreOptions, Value};
use autodebit_proto::EventKind as K;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Decoded;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// One entity's events, in its stream's order.
type Stream = Vec<K>;

#[derive(Debug, Clone)]
enum ChargeEnd {
    Succeeded,
    Failed,
    Rejected,
}

#[derive(Debug, Clone)]
struct ChargePlan {
    failures: u8,
    end: ChargeEnd,
}

#[derive(Debug, Clone)]
struct History {
    /// Per contract: its state changes (0 suspend, 1 resume, 2 terminate), its charges.
    contracts: Vec<(Vec<u8>, Vec<ChargePlan>)>,
    /// Per session: how far it got (0 opened … 3 confirmed), and whether it then ended (4
    /// abandoned, 5 expired) instead.
    sessions: Vec<(u8, bool)>,
    /// Per notice: its deliveries (channel index, minutes after recording), and whether the
    /// provider's delivery comes before the notice in the log.
    notices: Vec<(Vec<(u8, u8)>, bool)>,
    /// Per refund: whether it succeeded.
    refunds: Vec<bool>,
    /// Per held charge: 0 still held, 1 released by the payer, 2 by an operator, 3 rejected.
    holds: Vec<u8>,
    /// Per complaint: its answer (0 none, 1 refund, 2 reject, 3 resolve), whether the deadline
    /// was missed first, whether the answer came late.
    complaints: Vec<(u8, bool, bool)>,
    /// Picks the next stream when interleaving.
    picks: Vec<u16>,
    /// Batch sizes.
    batches: Vec<u8>,
}

fn history() -> impl Strategy<Value = History> {
    let charge = (0u8..3, 0u8..3).prop_map(|(failures, end)| ChargePlan {
        failures,
        end: match end {
            0 => ChargeEnd::Succeeded,
            1 => ChargeEnd::Failed,
            _ => ChargeEnd::Rejected,
        },
    });
    (
        prop::collection::vec((prop::collection::vec(0u8..3, 0..4), prop::collection::vec(charge, 0..4)), 1..5),
        prop::collection::vec((0u8..4, any::<bool>()), 0..6),
        prop::collection::vec((prop::collection::vec((0u8..3, 0u8..60), 0..4), any::<bool>()), 0..6),
        prop::collection::vec(any::<bool>(), 0..3),
        prop::collection::vec(0u8..4, 0..4),
        prop::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 0..4),
        prop::collection::vec(any::<u16>(), 200),
        prop::collection::vec(1u8..40, 1..20),
    )
        .prop_map(|(contracts, sessions, notices, refunds, holds, complaints, picks, batches)| History {
            contracts,
            sessions,
            notices,
            refunds,
            holds,
            complaints,
            picks,
            batches,
        })
}

const T0: i64 = 1_767_225_600_000;
const MERCHANT: &str = "m1";
const CHANNELS: [&str; 3] = ["log", "sms", "mini_program"];

fn money() -> Option<pb::Money> {
    Some(pb::Money { minor_units: 1_000, currency: "CNY".into() })
}

/// The history's events: the merchant and the contracts first (what the others look up), then
/// every other stream interleaved as `picks` says, each in its own order.
fn events(h: &History) -> Vec<K> {
    let mut first = vec![K::MerchantApplied(pb::MerchantApplied {
        merchant_id: MERCHANT.into(),
        industry: "membership".into(),
        time_zone: "Asia/Shanghai".into(),
        ..Default::default()
    })];
    let mut streams: Vec<Stream> = Vec::new();
    for (c, (changes, charges)) in h.contracts.iter().enumerate() {
        let contract = format!("ct{c}");
        first.push(K::ContractSigned(pb::ContractSigned {
            contract_id: contract.clone(),
            merchant_id: MERCHANT.into(),
            payer_id: format!("p{c}"),
            amount_per_cycle: money(),
            cycle: pb::Cycle::Monthly as i32,
            signed_at_ms: T0,
            plan_id: "plan1".into(),
            ..Default::default()
        }));
        let mut s = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            let at = T0 + 1_000 * (i as i64 + 1);
            s.push(match change {
                0 => K::ContractSuspended(pb::ContractSuspended {
                    contract_id: contract.clone(),
                    suspended_at_ms: at,
                    ..Default::default()
                }),
                1 => K::ContractResumed(pb::ContractResumed {
                    contract_id: contract.clone(),
                    resumed_at_ms: at,
                    ..Default::default()
                }),
                _ => K::ContractTerminated(pb::ContractTerminated {
                    contract_id: contract.clone(),
                    terminated_at_ms: at,
                    ..Default::default()
                }),
            });
        }
        streams.push(s);
        for (j, plan) in charges.iter().enumerate() {
            let charge = format!("ch{c}-{j}");
            let at = T0 + 3_600_000 * (j as i64 + 1);
            let mut s = Vec::new();
            if !matches!(plan.end, ChargeEnd::Rejected) {
                s.push(K::ChargeScheduled(pb::ChargeScheduled {
                    charge_id: charge.clone(),
                    contract_id: contract.clone(),
                    merchant_id: MERCHANT.into(),
                    amount: money(),
                    due_at_ms: at,
                    reason: pb::ChargeReason::Cycle as i32,
                    ..Default::default()
                }));
                for f in 0..plan.failures {
                    s.push(K::ChargeFailed(pb::ChargeFailed {
                        charge_id: charge.clone(),
                        merchant_id: MERCHANT.into(),
                        provider_code: format!("E{f}"),
                        failed_at_ms: at + i64::from(f) * 1_000,
                        ..Default::default()
                    }));
                    s.push(K::ChargeRetryScheduled(pb::ChargeRetryScheduled {
                        charge_id: charge.clone(),
                        scheduled_at_ms: at + i64::from(f) * 1_000 + 1,
                        ..Default::default()
                    }));
                }
            }
            s.push(match plan.end {
                ChargeEnd::Succeeded => K::ChargeSucceeded(pb::ChargeSucceeded {
                    charge_id: charge.clone(),
                    merchant_id: MERCHANT.into(),
                    succeeded_at_ms: at + 60_000,
                    ..Default::default()
                }),
                ChargeEnd::Failed => K::ChargeFailed(pb::ChargeFailed {
                    charge_id: charge.clone(),
                    merchant_id: MERCHANT.into(),
                    provider_code: "LAST".into(),
                    failed_at_ms: at + 60_000,
                    ..Default::default()
                }),
                ChargeEnd::Rejected => K::ChargeRejected(pb::ChargeRejected {
                    charge_id: charge.clone(),
                    contract_id: contract.clone(),
                    merchant_id: MERCHANT.into(),
                    rule: "daily_count".into(),
                    amount: money(),
                    due_at_ms: at,
                    rejected_at_ms: at,
                    ..Default::default()
                }),
            });
            streams.push(s);
        }
    }
    for (i, (reached, ended)) in h.sessions.iter().enumerate() {
        let session = format!("ss{i}");
        let mut s = vec![K::SigningSessionOpened(pb::SigningSessionOpened {
            session_id: session.clone(),
            merchant_id: MERCHANT.into(),
            plan_id: "plan1".into(),
            channel: pb::SigningChannel::H5 as i32,
            opened_at_ms: T0,
            ..Default::default()
        })];
        let steps = [pb::SigningStep::PageViewed, pb::SigningStep::AgreementTicked, pb::SigningStep::Confirmed];
        for (n, step) in steps.iter().enumerate().take(usize::from(*reached)) {
            s.push(K::SigningStepRecorded(pb::SigningStepRecorded {
                session_id: session.clone(),
                step: *step as i32,
                detail: if *step == pb::SigningStep::Confirmed { format!("ct-s{i}") } else { String::new() },
                at_ms: T0 + n as i64 + 1,
                ..Default::default()
            }));
        }
        if *ended && *reached < 3 {
            s.push(K::SigningStepRecorded(pb::SigningStepRecorded {
                session_id: session.clone(),
                step: pb::SigningStep::Abandoned as i32,
                at_ms: T0 + 10,
                ..Default::default()
            }));
        }
        streams.push(s);
    }
    for (i, (deliveries, provider_first)) in h.notices.iter().enumerate() {
        let notice = format!("n{i}");
        let mut s = vec![K::NoticeRecorded(pb::NoticeRecorded {
            notice_id: notice.clone(),
            kind: pb::NoticeKind::PreDebit as i32,
            contract_id: "ct0".into(),
            merchant_id: MERCHANT.into(),
            recorded_at_ms: T0,
            ..Default::default()
        })];
        for (c, minutes) in deliveries {
            s.push(K::NoticeDeliveryRecorded(pb::NoticeDeliveryRecorded {
                notice_id: notice.clone(),
                channel: CHANNELS[usize::from(*c)].into(),
                outcome: pb::DeliveryOutcome::Sent as i32,
                at_ms: T0 + i64::from(*minutes) * 60_000,
                ..Default::default()
            }));
        }
        streams.push(s);
        // The provider's own delivery, on a stream of its own: before the notice or after it.
        let provider = K::NoticeDeliveryRecorded(pb::NoticeDeliveryRecorded {
            notice_id: notice.clone(),
            channel: "simulator".into(),
            outcome: pb::DeliveryOutcome::Sent as i32,
            at_ms: T0 + 30 * 60_000,
            ..Default::default()
        });
        if *provider_first {
            first.push(provider);
        } else {
            streams.push(vec![provider]);
        }
    }
    for (i, ok) in h.refunds.iter().enumerate() {
        let refund = format!("rf{i}");
        let end = if *ok {
            K::RefundSucceeded(pb::RefundSucceeded {
                refund_id: refund.clone(),
                succeeded_at_ms: T0 + 5,
                ..Default::default()
            })
        } else {
            K::RefundFailed(pb::RefundFailed { refund_id: refund.clone(), failed_at_ms: T0 + 5, ..Default::default() })
        };
        streams.push(vec![
            K::RefundRequested(pb::RefundRequested {
                refund_id: refund.clone(),
                charge_id: "ch0-0".into(),
                merchant_id: MERCHANT.into(),
                amount: money(),
                requested_at_ms: T0 + 1,
                ..Default::default()
            }),
            end,
        ]);
    }
    for (i, end) in h.holds.iter().enumerate() {
        let charge = format!("held{i}");
        let mut s = vec![K::ChargeHeld(pb::ChargeHeld {
            charge_id: charge.clone(),
            contract_id: "ct0".into(),
            merchant_id: MERCHANT.into(),
            amount: money(),
            rule: "charge_over_mean".into(),
            mean_minor_units: 400,
            threshold_percent: 200,
            held_at_ms: T0 + 7,
            ..Default::default()
        })];
        let released = |by: &str| {
            K::ChargeHoldReleased(pb::ChargeHoldReleased {
                charge_id: charge.clone(),
                released_by: by.into(),
                released_at_ms: T0 + 8,
                ..Default::default()
            })
        };
        match end {
            1 => s.push(released("payer")),
            2 => s.push(released("operator")),
            3 => s.push(K::ChargeRejected(pb::ChargeRejected {
                charge_id: charge.clone(),
                contract_id: "ct0".into(),
                merchant_id: MERCHANT.into(),
                rule: "risk_hold_expired".into(),
                amount: money(),
                rejected_at_ms: T0 + 9,
                ..Default::default()
            })),
            _ => {}
        }
        streams.push(s);
    }
    for (i, (answer, missed, late)) in h.complaints.iter().enumerate() {
        let complaint = format!("cp{i}");
        let mut s = vec![K::ComplaintFiled(pb::ComplaintFiled {
            complaint_id: complaint.clone(),
            charge_id: format!("ch-c{i}"),
            merchant_id: MERCHANT.into(),
            kind: "amount_dispute".into(),
            source: "payer".into(),
            charged: money(),
            filed_at_ms: T0 + 11,
            deadline_at_ms: T0 + 12,
            ..Default::default()
        })];
        if *missed {
            s.push(K::ComplaintDeadlineMissed(pb::ComplaintDeadlineMissed {
                complaint_id: complaint.clone(),
                penalty: "settlement_delayed".into(),
                missed_at_ms: T0 + 12,
                ..Default::default()
            }));
        }
        if *answer > 0 {
            s.push(K::ComplaintAnswered(pb::ComplaintAnswered {
                complaint_id: complaint.clone(),
                answer: ["", "refund", "reject", "resolve"][usize::from(*answer)].into(),
                refund_minor_units: if *answer == 1 { 300 } else { 0 },
                late: *late,
                answered_at_ms: T0 + 13,
                ..Default::default()
            }));
        }
        streams.push(s);
    }
    // Interleave.
    let mut out = first;
    let mut cursors: Vec<std::vec::IntoIter<K>> = streams.into_iter().map(|s| s.into_iter()).collect();
    let mut pick = h.picks.iter().cycle();
    loop {
        cursors.retain(|c| c.len() > 0);
        if cursors.is_empty() {
            break;
        }
        let i = usize::from(*pick.next().unwrap_or(&0)) % cursors.len();
        out.extend(cursors[i].next());
    }
    out
}

fn decoded(kinds: Vec<K>) -> Vec<Decoded> {
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Decoded { stream: format!("s{i}"), version: 1, kind, meta: Default::default() })
        .collect()
}

async fn fresh(dir: &std::path::Path) -> EventStore {
    let store = EventStore::open(StoreOptions::new(&autodebit_eventstore::testing::sqlite_url(dir))).await.unwrap();
    store.migrate(&crate::store::MIGRATIONS).await.unwrap();
    store
}

async fn project(store: &EventStore, events: &[Decoded], sizes: &[u8]) {
    let projector = Projector::default();
    let mut sizes = sizes.iter().cycle();
    let mut rest = events;
    while !rest.is_empty() {
        let n = usize::from(*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        let mut tx = store.begin().await.unwrap();
        projector.project(&mut tx, &rest[..n]).await.unwrap();
        tx.commit().await.unwrap();
        rest = &rest[n..];
    }
}

async fn dump(store: &EventStore) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for t in crate::rebuild::tables_of(None).unwrap() {
        let rows = store.query(&format!("SELECT * FROM {t} ORDER BY 1, 2"), &[]).await.unwrap();
        out.push((t.to_string(), rows.iter().map(|r| format!("{:?}", r.0)).collect()));
    }
    out
}

async fn column(store: &EventStore, sql: &str) -> BTreeMap<String, String> {
    let rows = store.query(sql, &[]).await.unwrap();
    rows.iter()
        .map(|r| {
            let text = |v: &Value| match v {
                Value::Text(s) => s.clone(),
                other => format!("{other:?}"),
            };
            (text(r.get(0)), text(r.get(1)))
        })
        .collect()
}

/// What a fold of `events` from scratch says the tables hold.
struct Expected {
    charges: BTreeMap<String, String>,
    contracts: BTreeMap<String, String>,
    sessions: BTreeMap<String, String>,
    channels: BTreeMap<String, String>,
    refunds: BTreeMap<String, String>,
    /// Each hold's outcome and who decided it.
    holds: BTreeMap<String, String>,
    /// Each complaint's answer, lateness, refund and penalty.
    complaints: BTreeMap<String, String>,
}

fn fold(events: &[K]) -> Expected {
    let mut e = Expected {
        charges: BTreeMap::new(),
        contracts: BTreeMap::new(),
        sessions: BTreeMap::new(),
        channels: BTreeMap::new(),
        refunds: BTreeMap::new(),
        holds: BTreeMap::new(),
        complaints: BTreeMap::new(),
    };
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    let mut first_sent: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for k in events {
        match k {
            K::ContractSigned(s) => {
                e.contracts.insert(s.contract_id.clone(), "active".into());
            }
            K::ContractSuspended(s) => {
                e.contracts.insert(s.contract_id.clone(), "suspended".into());
            }
            K::ContractResumed(s) => {
                e.contracts.insert(s.contract_id.clone(), "active".into());
            }
            K::ContractTerminated(s) => {
                e.contracts.insert(s.contract_id.clone(), "terminated".into());
            }
            K::ChargeScheduled(s) => {
                e.charges.insert(s.charge_id.clone(), "scheduled/0".into());
            }
            K::ChargeFailed(f) => {
                let n = failures.entry(f.charge_id.clone()).or_default();
                *n += 1;
                e.charges.insert(f.charge_id.clone(), format!("failed/{n}"));
            }
            K::ChargeRetryScheduled(r) => {
                let n = failures.get(&r.charge_id).copied().unwrap_or(0);
                e.charges.insert(r.charge_id.clone(), format!("scheduled/{n}"));
            }
            K::ChargeSucceeded(s) => {
                let n = failures.get(&s.charge_id).copied().unwrap_or(0);
                e.charges.insert(s.charge_id.clone(), format!("succeeded/{n}"));
            }
            K::ChargeRejected(r) => {
                e.charges.insert(r.charge_id.clone(), "rejected/0".into());
                if e.holds.contains_key(&r.charge_id) {
                    e.holds.insert(r.charge_id.clone(), format!("rejected/{}", r.rule));
                }
            }
            K::ChargeHeld(h) => {
                e.holds.insert(h.charge_id.clone(), "held/".into());
            }
            K::ChargeHoldReleased(r) => {
                e.holds.insert(r.charge_id.clone(), format!("released/{}", r.released_by));
            }
            K::ComplaintFiled(c) => {
                e.complaints.insert(c.complaint_id.clone(), "/0/0/".into());
            }
            K::ComplaintDeadlineMissed(m) => {
                let was = e.complaints.get(&m.complaint_id).cloned().unwrap_or_default();
                let kept: Vec<&str> = was.split('/').take(3).collect();
                e.complaints.insert(m.complaint_id.clone(), format!("{}/{}", kept.join("/"), m.penalty));
            }
            K::ComplaintAnswered(a) => {
                let was = e.complaints.get(&a.complaint_id).cloned().unwrap_or_default();
                let penalty = was.rsplit('/').next().unwrap_or_default().to_string();
                let late = i64::from(a.late);
                e.complaints
                    .insert(a.complaint_id.clone(), format!("{}/{late}/{}/{penalty}", a.answer, a.refund_minor_units));
            }
            K::SigningSessionOpened(o) => {
                e.sessions.insert(o.session_id.clone(), "open".into());
            }
            K::SigningStepRecorded(s) => {
                let outcome = e.sessions.get(&s.session_id).cloned().unwrap_or_default();
                if outcome == "open" {
                    if s.step == pb::SigningStep::Confirmed as i32 {
                        e.sessions.insert(s.session_id.clone(), "signed".into());
                    } else if s.step == pb::SigningStep::Abandoned as i32 {
                        e.sessions.insert(s.session_id.clone(), "abandoned".into());
                    }
                }
            }
            K::NoticeRecorded(n) => {
                e.channels.entry(n.notice_id.clone()).or_default();
            }
            K::NoticeDeliveryRecorded(d) => {
                let candidate = (d.at_ms, d.channel.clone());
                let best = first_sent.entry(d.notice_id.clone()).or_insert_with(|| candidate.clone());
                if candidate < *best {
                    *best = candidate;
                }
                e.channels.insert(d.notice_id.clone(), best.1.clone());
            }
            K::RefundRequested(r) => {
                e.refunds.insert(r.refund_id.clone(), "requested".into());
            }
            K::RefundSucceeded(r) => {
                e.refunds.insert(r.refund_id.clone(), "succeeded".into());
            }
            K::RefundFailed(r) => {
                e.refunds.insert(r.refund_id.clone(), "failed".into());
            }
            _ => {}
        }
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn projections_equal_a_fold_whatever_the_batches(h in history()) {
        let kinds = events(&h);
        let expected = fold(&kinds);
        let events = decoded(kinds);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (batched, single) = runtime.block_on(async {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (sa, sb) = (fresh(a.path()).await, fresh(b.path()).await);
            project(&sa, &events, &h.batches).await;
            project(&sb, &events, &[1]).await;
            let got = (
                column(&sa, "SELECT charge_id, state || '/' || CAST(failures AS TEXT) FROM analytics_charges").await,
                column(&sa, "SELECT contract_id, state FROM analytics_contracts").await,
                column(&sa, "SELECT session_id, outcome FROM analytics_signing_sessions").await,
                column(&sa, "SELECT notice_id, channel FROM analytics_notices").await,
                column(&sa, "SELECT refund_id, state FROM analytics_refunds").await,
                column(&sa, "SELECT name, CAST(value AS TEXT) FROM analytics_counters").await,
                column(&sa, "SELECT charge_id, outcome || '/' || decided_by FROM analytics_risk_holds").await,
                column(
                    &sa,
                    "SELECT complaint_id, answer || '/' || CAST(late AS TEXT) || '/' || CAST(refunded AS TEXT) || '/' || penalty
                     FROM analytics_complaints",
                )
                .await,
            );
            ((dump(&sa).await, got), dump(&sb).await)
        });
        let ((tables, (charges, contracts, sessions, channels, refunds, counters, holds, complaints)), one_by_one) =
            (batched, single);
        prop_assert_eq!(&tables, &one_by_one, "batches of any size, or one event at a time");
        prop_assert_eq!(charges, expected.charges);
        prop_assert_eq!(contracts, expected.contracts);
        prop_assert_eq!(sessions, expected.sessions);
        prop_assert_eq!(channels, expected.channels);
        prop_assert_eq!(refunds, expected.refunds);
        prop_assert_eq!(holds, expected.holds);
        prop_assert_eq!(complaints, expected.complaints);
        prop_assert_eq!(counters.get("events_projected").cloned(), Some(events.len().to_string()));
    }
}
