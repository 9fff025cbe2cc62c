//! The notifier's log follower. For each event it reads, in the transaction that moves its
//! checkpoint:
//! - the notice the event calls for (`app::compose`), rendered from the merchant's template in
//!   the payer's language, recorded on the log (`NoticeRecorded`) and in `notifier_notices`,
//!   and queued in `notifier_outbox` on the channels the merchant set up;
//! - the webhook deliveries of the event, one per endpoint of its merchant that wants its type,
//!   queued in `notifier_webhook_outbox`;
//! - the conversion of an earlier notice the event is (`NoticeConverted`).
//!
//! So each notice and each delivery is queued exactly once; the workers send them after commit.
use crate::app::compose::{self, Wanted};
use crate::app::notice_id;
use crate::app::settings::{self, MerchantView};
use crate::store::{self, ContractRow};
use autodebit_domain::notice::{self as rules, Language, NoticeKind};
use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Webhooks of events older than this when first read are not queued: reading the log again
/// after an import must not replay a merchant's history at its endpoints. (Notices need no such
/// rule: a notice recorded before is found by its id and not told again.)
const HORIZON_MS: i64 = 3 * 86_400_000;

pub struct NoticeWriter {
    clock: PlatformClock,
    store: EventStore,
    public_url: String,
    /// Plans by id, as created (a plan never changes): what signing notices state.
    plans: Mutex<HashMap<String, Arc<pb::PlanTerms>>>,
    /// Woken once a batch's notices and webhooks are committed.
    pub(crate) queued: Arc<tokio::sync::Notify>,
}

impl NoticeWriter {
    pub fn new(clock: PlatformClock, store: EventStore, public_url: String, queued: Arc<tokio::sync::Notify>) -> Self {
        NoticeWriter { clock, store, public_url, plans: Mutex::default(), queued }
    }

    /// The terms of the plans the batch's contracts were signed against, read from each
    /// plan's stream once per process.
    async fn plans_of(&self, events: &[Decoded]) -> anyhow::Result<crate::app::Plans> {
        let mut found = crate::app::Plans::new();
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

/// A batch's work found before its transaction: the notices wanted (with their causing event),
/// the contracts signed in it, the merchants named in it.
pub struct Prepared {
    now: i64,
    wanted: Vec<(usize, Wanted)>,
    signed: Vec<ContractRow>,
    names: Vec<(String, String)>,
}

/// What the outbox's sender needs of a notice, kept as JSON in `notifier_outbox.payload`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub kind: String,
    pub recipient: String,
    pub phone: String,
    pub contract_id: String,
    pub text: String,
    pub fields: BTreeMap<String, String>,
    pub link: String,
    pub language: String,
    pub time_zone: String,
}

fn random_token() -> String {
    let id = uuid::Uuid::new_v4();
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id.as_bytes()[..12])
}

impl Processor for NoticeWriter {
    type Prepared = Prepared;

    fn name(&self) -> &'static str {
        "notifier.notices"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "MerchantApplied",
            "ContractSigned",
            "ContractTerminated",
            "ContractModified",
            "ContractSuspended",
            "ContractResumed",
            "ContractExpiring",
            "ContractExpired",
            "ContractZombieFlagged",
            "ChargeScheduled",
            "ChargeSucceeded",
            "ChargeFailed",
            "ChargeRejected",
            "ChargeRetryScheduled",
            "ChargeHeld",
            "ChargeHoldReleased",
            "ComplaintFiled",
            "ComplaintAnswered",
            "ComplaintDeadlineMissed",
            "PreDebitNoticeIssued",
            "RefundSucceeded",
            "RefundFailed",
            "VerificationCodeIssued",
            "WebhookEndpointDisabled",
            "NoticeDeliveryRecorded",
        ]
    }

    /// Of deliveries, only those the charger records of the provider's own pre-debit notice
    /// (the notifier's own it records as it makes them).
    fn wants(&self, kind: &EventKind) -> bool {
        match kind {
            EventKind::NoticeDeliveryRecorded(n) => autodebit_domain::notice::Channel::from_name(&n.channel).is_none(),
            _ => true,
        }
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Prepared> {
        let now = self.clock.now_ms();
        let plans = self.plans_of(events).await?;
        let mut signed = Vec::new();
        let mut names = Vec::new();
        let mut wanted = Vec::new();
        for (i, d) in events.iter().enumerate() {
            match &d.kind {
                EventKind::ContractSigned(s) => {
                    let terms = crate::app::signed_terms(s, plans.get(&s.plan_id).map(|p| p.as_ref()));
                    signed.push(ContractRow {
                        contract_id: s.contract_id.clone(),
                        merchant_id: s.merchant_id.clone(),
                        payer_id: s.payer_id.clone(),
                        phone: s.payer_phone.clone(),
                        language: s.language.clone(),
                        service_name: terms.service_name.clone(),
                    });
                }
                EventKind::MerchantApplied(m) => names.push((m.merchant_id.clone(), m.legal_name.clone())),
                _ => {}
            }
            let w = compose::notice_for(&d.kind, |s| {
                let terms = crate::app::signed_terms(s, plans.get(&s.plan_id).map(|p| p.as_ref()));
                terms.lines(false).join("；")
            });
            if let Some(w) = w {
                wanted.push((i, w));
            }
        }
        Ok(Prepared { now, wanted, signed, names })
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], p: Prepared) -> anyhow::Result<()> {
        let Prepared { now, wanted, signed, names } = p;
        store::save_contracts(tx, &signed).await?;
        store::save_merchant_names(tx, &names).await?;
        // The provider's pre-debit notices, as the charger recorded them: deliveries of the
        // payer's pre-debit notice on the provider's channel.
        let provider_deliveries: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|d| match &d.kind {
                EventKind::NoticeDeliveryRecorded(n) if d.stream.starts_with("provider-notice-") => {
                    Some(serde_json::json!([
                        n.notice_id,
                        n.channel,
                        n.outcome as i64,
                        n.provider_message_id,
                        n.detail,
                        n.at_ms
                    ]))
                }
                _ => None,
            })
            .collect();
        store::insert_deliveries(tx, provider_deliveries).await?;

        // What the events do not carry: each contract's merchant, payer, phone, language.
        let mut contract_ids: Vec<String> = wanted.iter().map(|(_, w)| w.contract_id.clone()).collect();
        contract_ids.extend(events.iter().filter_map(|d| compose::webhook_for(&d.kind)).map(|w| w.2.to_string()));
        contract_ids.retain(|c| !c.is_empty());
        contract_ids.sort();
        contract_ids.dedup();
        let contracts: HashMap<String, ContractRow> =
            store::contracts(tx, contract_ids).await?.into_iter().map(|c| (c.contract_id.clone(), c)).collect();
        let merchant_of = |given: &str, contract: &str| -> String {
            if !given.is_empty() {
                return given.to_string();
            }
            contracts.get(contract).map(|c| c.merchant_id.clone()).unwrap_or_default()
        };

        // The merchants' settings, templates and endpoints.
        let mut merchant_ids: Vec<String> =
            wanted.iter().map(|(_, w)| merchant_of(&w.merchant_id, &w.contract_id)).collect();
        let hooks: Vec<(usize, &'static str, String, serde_json::Value)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let (ty, merchant, contract, data) = compose::webhook_for(&d.kind)?;
                Some((i, ty, merchant_of(merchant, contract), data))
            })
            .collect();
        merchant_ids.extend(hooks.iter().map(|h| h.2.clone()));
        merchant_ids.retain(|m| !m.is_empty());
        merchant_ids.sort();
        merchant_ids.dedup();
        let merchants = settings::views(tx, merchant_ids.clone()).await?;
        let endpoints = crate::app::webhooks::endpoints_of(tx, merchant_ids).await?;

        // Notices.
        let mut appends = Vec::with_capacity(wanted.len());
        let mut rows = Vec::with_capacity(wanted.len());
        let mut queue = Vec::with_capacity(wanted.len());
        let fallback = MerchantView::default();
        let mut recorded_before = Vec::new();
        for (i, w) in wanted {
            let d = &events[i];
            let at = if d.meta.occurred_at_ms > 0 { d.meta.occurred_at_ms } else { now };
            let contract = contracts.get(&w.contract_id);
            let merchant_id = merchant_of(&w.merchant_id, &w.contract_id);
            let payer = if w.payer_id.is_empty() {
                contract.map(|c| c.payer_id.clone()).unwrap_or_default()
            } else {
                w.payer_id.clone()
            };
            if payer.is_empty() {
                continue;
            }
            let view = merchants.get(&merchant_id).unwrap_or(&fallback);
            let language = [w.language.as_str(), contract.map(|c| c.language.as_str()).unwrap_or("")]
                .into_iter()
                .find_map(Language::parse)
                .unwrap_or(view.language);
            let zone =
                if !view.settings.time_zone.is_empty() { view.settings.time_zone.clone() } else { w.time_zone.clone() };
            let phone = if w.phone.is_empty() {
                contract.map(|c| c.phone.clone()).unwrap_or_default()
            } else {
                w.phone.clone()
            };
            let token = if w.kind.has_link() { random_token() } else { String::new() };
            let link = if token.is_empty() { String::new() } else { format!("{}/n/{token}", self.public_url) };
            let service = contract.map(|c| c.service_name.as_str()).unwrap_or("");
            let fields =
                compose::field_values(&w.fields, language, &zone, service, &view.name, &link, &self.public_url);
            let text = rules::render(view.template(w.kind, language), &fields);
            let channels = crate::channels::plan(&view.settings, w.kind);
            let notice_id = notice_id(&w.contract_id, &d.meta.event_id);
            // Recorded at the time of its cause, so that reading the log again gives every
            // notice the time it had.
            let event = pb::Event {
                kind: Some(EventKind::NoticeRecorded(pb::NoticeRecorded {
                    notice_id: notice_id.clone(),
                    kind: crate::app::kind_to_pb(w.kind) as i32,
                    channel: channels.first().map(|c| c.name()).unwrap_or("").to_string(),
                    recipient: payer.clone(),
                    contract_id: w.contract_id.clone(),
                    charge_id: w.charge_id.clone(),
                    text: text.clone(),
                    recorded_at_ms: at,
                    merchant_id: merchant_id.clone(),
                    language: language.tag().to_string(),
                    link_token: token.clone(),
                    channels: channels.iter().map(|c| c.name().to_string()).collect(),
                    fields: fields.clone().into_iter().collect(),
                    phone: phone.clone(),
                })),
            };
            appends.push(StreamAppend {
                stream: format!("notice-{notice_id}"),
                expected: ExpectedVersion::NoStream,
                events: vec![codec::encode(event, &Cause::of(d), now)],
            });
            rows.push(serde_json::json!([
                notice_id,
                crate::app::kind_to_pb(w.kind) as i64,
                payer,
                w.contract_id,
                w.charge_id,
                text,
                at,
                merchant_id,
                language.tag(),
                token,
                "pending"
            ]));
            let payload = Payload {
                kind: w.kind.name().to_string(),
                recipient: payer,
                phone,
                contract_id: w.contract_id.clone(),
                text,
                fields,
                link,
                language: language.tag().to_string(),
                time_zone: zone,
            };
            queue.push(serde_json::json!([
                notice_id,
                merchant_id,
                serde_json::to_string(&payload)?,
                channels.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
                now,
                i64::from(w.kind.payer_acted())
            ]));
        }
        // A notice's stream that exists already holds this very notice (its id derives from the
        // causing event): the log is being read again, after a restore or an import. It is not
        // sent again.
        let mut fresh_rows = Vec::with_capacity(rows.len());
        let mut fresh_queue = Vec::with_capacity(queue.len());
        for (((outcome, row), q), append) in
            tx.append_each(&appends).await?.into_iter().zip(rows).zip(queue).zip(&appends)
        {
            match outcome {
                Ok(_) => {
                    fresh_rows.push(row);
                    fresh_queue.push(q);
                }
                Err(e) if e.is_conflict() => recorded_before.push(append.stream["notice-".len()..].to_string()),
                Err(e) => return Err(e.into()),
            }
        }
        // A notice recorded before keeps the row its event says, as it was told.
        for id in recorded_before {
            let recorded = tx.read_stream(&format!("notice-{id}"), 0).await?;
            let Some(EventKind::NoticeRecorded(n)) =
                recorded.into_iter().filter_map(codec::decode).map(|d| d.kind).next()
            else {
                continue;
            };
            let language = if n.language.is_empty() { Language::ZhCn.tag().to_string() } else { n.language };
            fresh_rows.push(serde_json::json!([
                n.notice_id,
                i64::from(n.kind),
                n.recipient,
                n.contract_id,
                n.charge_id,
                n.text,
                n.recorded_at_ms,
                n.merchant_id,
                language,
                n.link_token,
                "sent"
            ]));
        }
        store::insert_notices(tx, fresh_rows).await?;
        store::queue_notices(tx, fresh_queue).await?;

        // Webhooks.
        let mut deliveries = Vec::new();
        for (i, ty, merchant, data) in hooks {
            let d = &events[i];
            let at = if d.meta.occurred_at_ms > 0 { d.meta.occurred_at_ms } else { now };
            if now - at > HORIZON_MS {
                continue;
            }
            let Some(eps) = endpoints.get(&merchant) else { continue };
            let body = serde_json::json!({
                "type": ty,
                "timestamp": autodebit_domain::clock::from_millis(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": data,
            })
            .to_string();
            for ep in eps.iter().filter(|e| e.wants(ty)) {
                deliveries.push(serde_json::json!([
                    crate::app::webhooks::delivery_id(&d.meta.event_id, &ep.endpoint_id),
                    ep.endpoint_id,
                    merchant,
                    ty,
                    body,
                    now
                ]));
            }
        }
        crate::app::webhooks::queue(tx, deliveries).await?;

        // Conversions: the batch's candidates read in one statement (the notices just recorded
        // among them), then matched event by event, in log order.
        let mut wanted_conversions = Vec::new();
        for d in events {
            let Some((conversions, contract_id, cause)) = compose::conversion_of(&d.kind) else { continue };
            let at = if d.meta.occurred_at_ms > 0 { d.meta.occurred_at_ms } else { now };
            wanted_conversions.push((d, conversions, contract_id, cause, at));
        }
        let contract_ids: Vec<String> = wanted_conversions.iter().map(|w| w.2.to_string()).collect();
        let kinds: Vec<i64> = wanted_conversions
            .iter()
            .flat_map(|w| w.1.iter())
            .flat_map(|c| NoticeKind::converted_by(*c).iter())
            .map(|k| crate::app::kind_to_pb(*k) as i64)
            .collect();
        let earliest =
            wanted_conversions.iter().map(|w| w.4).min().unwrap_or(now) - rules::CONVERSION_WINDOW_HOURS * 3_600_000;
        let mut candidates = store::convertible(tx, contract_ids, kinds, earliest).await?;
        for (d, conversions, contract_id, cause, at) in wanted_conversions {
            for &conversion in conversions {
                let kinds: Vec<i64> =
                    NoticeKind::converted_by(conversion).iter().map(|k| crate::app::kind_to_pb(*k) as i64).collect();
                let from = at - rules::CONVERSION_WINDOW_HOURS * 3_600_000;
                // The last one recorded in the window, not converted yet.
                let Some(i) = candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| {
                        n.contract_id == contract_id
                            && n.converted_at_ms == 0
                            && kinds.contains(&n.kind)
                            && (from..=at).contains(&n.recorded_at_ms)
                    })
                    .max_by(|a, b| (a.1.recorded_at_ms, &a.1.notice_id).cmp(&(b.1.recorded_at_ms, &b.1.notice_id)))
                    .map(|(i, _)| i)
                else {
                    continue;
                };
                candidates[i].converted_at_ms = at;
                let n = &candidates[i];
                store::mark_converted(tx, &n.notice_id, at).await?;
                let converted_event = EventKind::NoticeConverted(pb::NoticeConverted {
                    notice_id: n.notice_id.clone(),
                    merchant_id: n.merchant_id.clone(),
                    contract_id: n.contract_id.clone(),
                    kind: n.kind as i32,
                    channel: n.channel.clone(),
                    conversion: conversion.name().to_string(),
                    cause: cause.to_string(),
                    at_ms: at,
                });
                store::append_to_notice(tx, &n.notice_id, converted_event, &Cause::of(d), now).await?;
            }
        }
        Ok(())
    }

    fn committed(&self) {
        self.queued.notify_waiters();
    }
}
