//! The notifier's log follower: turns contract and charge events into notices for the payer
//! (what each says: `app`), records each on the log and in `notifier_notices`, and tells it on
//! the log channel.
use crate::app::{LOG_CHANNEL, Plans, notice_for, notice_id};
use crate::store;
use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, NoticeKind};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct NoticeWriter {
    clock: PlatformClock,
    store: EventStore,
    /// Plans by id, as created (a plan never changes): what signing notices state.
    plans: Mutex<HashMap<String, Arc<pb::PlanTerms>>>,
}

impl NoticeWriter {
    pub fn new(clock: PlatformClock, store: EventStore) -> Self {
        NoticeWriter { clock, store, plans: Mutex::default() }
    }

    /// The terms of the plans the batch's contracts were signed against, read from each
    /// plan's stream once per process.
    async fn plans_of(&self, events: &[Decoded]) -> anyhow::Result<Plans> {
        let mut found = Plans::new();
        for d in events {
            let EventKind::ContractSigned(s) = &d.kind else { continue };
            if s.plan_id.is_empty() || found.contains_key(&s.plan_id) {
                continue;
            }
            let cached = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(&s.plan_id).cloned();
            let terms = match cached {
                Some(t) => t,
                None => {
                    let stream = self.store.read_stream(&format!("plan-{}", s.plan_id), 0).await?;
                    let created = stream.into_iter().filter_map(codec::decode).find_map(|d| match d.kind {
                        EventKind::PlanCreated(p) => p.terms,
                        _ => None,
                    });
                    let Some(terms) = created else { continue };
                    let terms = Arc::new(terms);
                    self.plans.lock().unwrap_or_else(|p| p.into_inner()).insert(s.plan_id.clone(), terms.clone());
                    terms
                }
            };
            found.insert(s.plan_id.clone(), terms);
        }
        Ok(found)
    }
}

/// One notice, worked out: its row in `notifier_notices` and the event that records it.
struct Notice {
    row: serde_json::Value,
    append: StreamAppend,
}

/// The notice `d` calls for, told to `recipient` (and logged: the log channel's delivery).
fn notice(
    d: &Decoded,
    kind: NoticeKind,
    recipient: String,
    contract_id: &str,
    charge_id: &str,
    text: String,
    now: i64,
) -> Notice {
    // One notice per causing event, whatever happens: its id derives from the event's.
    let notice_id = notice_id(contract_id, &d.meta.event_id);
    tracing::info!(target: "autodebit::notice", channel = LOG_CHANNEL, %recipient, contract_id, charge_id, "{text}");
    // Recorded at the time of its cause, so that reading the log again (after a restore or an
    // import) gives every notice the time it had.
    let at = if d.meta.occurred_at_ms > 0 { d.meta.occurred_at_ms } else { now };
    let row = serde_json::json!([notice_id, kind as i64, recipient, contract_id, charge_id, text, at]);
    let event = pb::Event {
        kind: Some(EventKind::NoticeRecorded(pb::NoticeRecorded {
            notice_id: notice_id.clone(),
            kind: kind as i32,
            channel: LOG_CHANNEL.into(),
            recipient,
            contract_id: contract_id.into(),
            charge_id: charge_id.into(),
            text,
            recorded_at_ms: at,
            ..Default::default()
        })),
    };
    let append = StreamAppend {
        stream: format!("notice-{notice_id}"),
        expected: ExpectedVersion::NoStream,
        events: vec![codec::encode(event, &Cause::of(d), now)],
    };
    Notice { row, append }
}

/// A batch's notices worked out before its transaction, one per event, as of `now`; `None`
/// where the recipient is looked up inside it.
pub struct Notices {
    now: i64,
    each: Vec<Option<Notice>>,
    plans: Plans,
}

impl Processor for NoticeWriter {
    /// Everything but the writes, done before the transaction opens, so that the one writer is
    /// held only for them.
    type Prepared = Notices;

    fn name(&self) -> &'static str {
        "notifier.notices"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "ContractSigned",
            "ContractTerminated",
            "ContractModified",
            "ContractSuspended",
            "ContractResumed",
            "ContractExpired",
            "ContractZombieFlagged",
            "ChargeSucceeded",
            "ChargeFailed",
            "PreDebitNoticeIssued",
        ]
    }

    fn wants(&self, kind: &EventKind) -> bool {
        notice_for(kind, &Plans::new()).is_some()
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Notices> {
        let now = self.clock.now_ms();
        let plans = self.plans_of(events).await?;
        let each = events
            .iter()
            .map(|d| {
                let (kind, recipient, contract_id, charge_id, text) = notice_for(&d.kind, &plans)?;
                (!recipient.is_empty())
                    .then(|| notice(d, kind, recipient.to_string(), contract_id, charge_id, text, now))
            })
            .collect();
        Ok(Notices { now, each, plans })
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], notices: Notices) -> anyhow::Result<()> {
        let Notices { now, each, plans } = notices;
        let mut appends = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for (d, ready) in events.iter().zip(each) {
            let n = match ready {
                Some(n) => n,
                None => {
                    let Some((kind, _, contract_id, charge_id, text)) = notice_for(&d.kind, &plans) else { continue };
                    // A termination names no payer: the contract's payer is the one its
                    // signing notice went to, which may be among the notices of this batch.
                    store::insert_notices(tx, std::mem::take(&mut rows), LOG_CHANNEL).await?;
                    let signed = NoticeKind::ContractSigned as i64;
                    let recipient = store::recipient_of(tx, contract_id, signed).await?.unwrap_or_default();
                    notice(d, kind, recipient, contract_id, charge_id, text, now)
                }
            };
            rows.push(n.row);
            appends.push(n.append);
        }
        store::insert_notices(tx, rows, LOG_CHANNEL).await?;
        let owners: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|d| match &d.kind {
                EventKind::ContractSigned(s) => Some(serde_json::json!([s.contract_id, s.merchant_id])),
                _ => None,
            })
            .collect();
        store::save_owners(tx, owners).await?;
        // A notice's stream that exists already holds this very notice (its id derives from the
        // causing event): the log is being read again, after a restore or an import.
        for outcome in tx.append_each(&appends).await? {
            match outcome {
                Err(e) if e.is_conflict() => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}
