//! Turns contract and charge events into notices for the payer.
use autodebit_domain::plan::{AmountType, ChargeMode};
use autodebit_domain::terms::Terms;
use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, NoticeKind};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The channel of this release: notices go to the process log.
pub const LOG_CHANNEL: &str = "log";

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2c0b_51f4_8d7e_4a9b_a3c6_71e0_94d2_5f18);

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

type Plans = HashMap<String, Arc<pb::PlanTerms>>;

/// The terms a contract was signed on: its plan's, with the contract's own cycle and amount
/// (an imported contract may differ from its plan's); a contract of no known plan is a fixed
/// cycle of its amount.
fn signed_terms(s: &pb::ContractSigned, plan: Option<&pb::PlanTerms>) -> Terms {
    let amount = codec::money_from_pb(s.amount_per_cycle.as_ref()).unwrap_or(autodebit_domain::Money::cny(0));
    let cycle = codec::cycle_from_pb(s.cycle);
    let fixed = Terms {
        service_name: String::new(),
        charge_mode: ChargeMode::FixedCycle,
        cycle,
        amount_type: AmountType::Fixed,
        amount,
        per_charge_cap: amount,
        first_charge_at_signing: false,
        usage: None,
    };
    let Some(p) = plan else { return fixed };
    let charge_mode = match pb::ChargeMode::try_from(p.charge_mode) {
        Ok(pb::ChargeMode::Usage) => ChargeMode::Usage,
        Ok(pb::ChargeMode::EventTriggered) => ChargeMode::EventTriggered,
        Ok(pb::ChargeMode::Hybrid) => ChargeMode::Hybrid,
        _ => ChargeMode::FixedCycle,
    };
    let plan_cycle = codec::cycle_from_pb(p.cycle);
    Terms {
        service_name: p.service_name.clone(),
        charge_mode,
        cycle: if charge_mode == ChargeMode::FixedCycle || charge_mode == ChargeMode::Hybrid {
            cycle
        } else {
            plan_cycle
        },
        amount_type: if p.amount_type == pb::AmountType::Fixed as i32 {
            AmountType::Fixed
        } else {
            AmountType::UpToCap
        },
        per_charge_cap: codec::money_from_pb(p.per_charge_cap.as_ref()).unwrap_or(amount),
        first_charge_at_signing: p.first_charge_at_signing,
        usage: p.usage.as_ref().and_then(|u| {
            codec::usage_from_pb(u, pb::ChargeMode::try_from(p.charge_mode).unwrap_or_default(), plan_cycle).ok()
        }),
        ..fixed
    }
}

fn money(m: Option<&pb::Money>) -> String {
    codec::money_from_pb(m).map(|m| m.to_string()).unwrap_or_default()
}

/// A moment as the payer reads it: in the merchant's zone, named unless it is the default
/// (Beijing time), e.g. "2026-03-01 09:00 (Europe/London)".
fn local_time(at_ms: i64, zone: &str) -> String {
    use autodebit_domain::cycle::{DEFAULT_ZONE, zone as parse_zone};
    let at = autodebit_domain::clock::from_millis(at_ms);
    match parse_zone(zone) {
        Ok(tz) if !zone.is_empty() && zone != DEFAULT_ZONE => {
            format!("{} ({zone})", at.with_timezone(&tz).format("%Y-%m-%d %H:%M"))
        }
        _ => at.with_timezone(&autodebit_domain::cycle::beijing()).format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// The notice an event calls for: kind, recipient, contract, charge, text (Chinese, the
/// payers' default language). A signing notice states the terms of the contract's plan, as
/// the authorization page did.
fn notice_for<'a>(kind: &'a EventKind, plans: &Plans) -> Option<(NoticeKind, &'a str, &'a str, &'a str, String)> {
    Some(match kind {
        EventKind::ContractSigned(s) => {
            let terms = signed_terms(s, plans.get(&s.plan_id).map(|p| p.as_ref()));
            let service =
                if terms.service_name.is_empty() { String::new() } else { format!("「{}」", terms.service_name) };
            (
                NoticeKind::ContractSigned,
                s.payer_id.as_str(),
                s.contract_id.as_str(),
                "",
                format!(
                    "您已开通自动扣费服务{service}：{}。扣款前会提前通知您，您可随时解约。",
                    terms.lines(false).join("；")
                ),
            )
        }
        EventKind::ContractTerminated(t) => (
            NoticeKind::ContractTerminated,
            t.payer_id.as_str(),
            t.contract_id.as_str(),
            "",
            "您的自动扣费协议已解除，此后不会再扣款。".to_string(),
        ),
        EventKind::ContractModified(m) => {
            (NoticeKind::ContractModified, m.payer_id.as_str(), m.contract_id.as_str(), "", m.notice.clone())
        }
        EventKind::ContractSuspended(s) => (
            NoticeKind::ContractSuspended,
            s.payer_id.as_str(),
            s.contract_id.as_str(),
            "",
            format!("您的自动扣费已暂停：{}。", s.reason),
        ),
        EventKind::ContractResumed(r) => (
            NoticeKind::ContractResumed,
            r.payer_id.as_str(),
            r.contract_id.as_str(),
            "",
            "您的自动扣费已恢复。".to_string(),
        ),
        EventKind::ContractExpired(e) => (
            NoticeKind::ContractExpired,
            e.payer_id.as_str(),
            e.contract_id.as_str(),
            "",
            "您的自动扣费协议已到期，此后不会再扣款。".to_string(),
        ),
        EventKind::ContractZombieFlagged(z) => (
            NoticeKind::ContractZombie,
            z.payer_id.as_str(),
            z.contract_id.as_str(),
            "",
            "您的自动扣费协议已长期未使用，如继续不使用将自动解约。".to_string(),
        ),
        EventKind::ChargeSucceeded(s) => (
            NoticeKind::ChargeSucceeded,
            s.payer_id.as_str(),
            s.contract_id.as_str(),
            s.charge_id.as_str(),
            format!("本期自动扣款 {} 已成功。", money(s.amount.as_ref())),
        ),
        EventKind::ChargeFailed(f) => (
            NoticeKind::ChargeFailed,
            f.payer_id.as_str(),
            f.contract_id.as_str(),
            f.charge_id.as_str(),
            format!("本期自动扣款 {} 未成功（{}）。", money(f.amount.as_ref()), f.provider_code),
        ),
        EventKind::PreDebitNoticeIssued(n) => (
            NoticeKind::PreDebit,
            n.payer_id.as_str(),
            n.contract_id.as_str(),
            n.charge_id.as_str(),
            format!(
                "扣款提醒：您的自动扣费预计于 {} 扣款 {}。如不再需要，可在此之前解约。",
                local_time(n.charge_due_at_ms, &n.time_zone),
                money(n.estimated_amount.as_ref())
            ),
        ),
        _ => return None,
    })
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
                    insert_notices(tx, std::mem::take(&mut rows)).await?;
                    let found = tx
                        .query(
                            "SELECT recipient FROM notifier_notices WHERE contract_id = $1 AND kind = $2",
                            &[Value::from(contract_id), Value::Int(NoticeKind::ContractSigned as i64)],
                        )
                        .await?;
                    let recipient = found.first().and_then(|r| r.text(0)).unwrap_or_default().to_string();
                    notice(d, kind, recipient, contract_id, charge_id, text, now)
                }
            };
            rows.push(n.row);
            appends.push(n.append);
        }
        insert_notices(tx, rows).await?;
        let owners: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|d| match &d.kind {
                EventKind::ContractSigned(s) => Some(serde_json::json!([s.contract_id, s.merchant_id])),
                _ => None,
            })
            .collect();
        if !owners.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO notifier_contracts (contract_id, merchant_id)
                     SELECT value->>0, value->>1 FROM {} WHERE true ON CONFLICT (contract_id) DO NOTHING",
                    tx.kind().json_rows(1)
                ),
                &[Value::from(serde_json::Value::Array(owners).to_string())],
            )
            .await?;
        }
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

/// A notice's id, one per causing event whatever happens. It leads with its contract id's
/// first eight bytes, as charge ids do, so that a billing run's notices (issued about in
/// contract order) land next to each other in the notices table and the stream index instead
/// of at random places.
fn notice_id(contract_id: &str, event_id: &str) -> String {
    let mut b = *uuid::Uuid::new_v5(&NAMESPACE, event_id.as_bytes()).as_bytes();
    if let Ok(contract) = autodebit_domain::ContractId::parse(contract_id) {
        b[..8].copy_from_slice(&contract.leading_bytes());
    }
    format!("nt_{}", uuid::Uuid::from_bytes(b).simple())
}

/// Writes notices in one statement; each row is `[notice_id, kind, recipient, contract_id,
/// charge_id, text]`.
async fn insert_notices(tx: &mut Tx, rows: Vec<serde_json::Value>) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_notices (notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms)
             SELECT value->>0, CAST(value->>1 AS BIGINT), $2, value->>2, value->>3, value->>4, value->>5,
                    CAST(value->>6 AS BIGINT)
             FROM {} WHERE true
             ON CONFLICT (notice_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string()), Value::from(LOG_CHANNEL)],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::notice_id;

    #[test]
    fn notice_ids_are_one_per_event_and_sort_with_their_contract() {
        let a = autodebit_domain::ContractId::generate().to_string();
        let b = autodebit_domain::ContractId::generate().to_string();
        assert_eq!(notice_id(&a, "ev-1"), notice_id(&a, "ev-1"), "the same event gives the same notice");
        assert_ne!(notice_id(&a, "ev-1"), notice_id(&a, "ev-2"));
        // Both lead with the contract id's first eight bytes (16 hex digits after the prefix).
        assert_eq!(notice_id(&a, "ev-1")[3..19], a[3..19]);
        assert!(
            notice_id(&a, "ev-9") < notice_id(&b, "ev-1") || a[3..19] == b[3..19],
            "a later contract's notices sort after"
        );
        // A notice of no contract still has an id.
        assert!(notice_id("", "ev-1").starts_with("nt_"));
    }
}
