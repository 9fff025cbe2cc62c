//! The notice sender: works through `notifier_outbox` after the follower commits. Each due notice
//! is taken (`sending`, in its own transaction), sent on its current channel, and its outcome
//! recorded (`NoticeDeliveryRecorded`, `notifier_deliveries`, the outbox row) in one
//! transaction per batch, while the next batch is taken and sent. A sender that dies between taking and recording leaves rows in
//! `sending`: whoever next holds the sender's lease sends them again, under the same notice id —
//! only notices whose outcome is unknown are ever sent twice.
use crate::app::settings;
use crate::channels::{Channels, Outcome, Outgoing};
use crate::processor::Payload;
use crate::store::{self, OutboxRow};
use autodebit_domain::notice::{Channel, Language, NoticeKind, QuietHours};
use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Notices taken per pass.
const BATCH: i64 = 1000;
/// Sends in flight at once.
const CONCURRENCY: usize = 256;
/// Tries on one channel before the next is tried.
const TRIES_PER_CHANNEL: i64 = 4;
/// Messages per second on a channel for one merchant when the merchant sets no limit.
pub const DEFAULT_PER_SECOND: u32 = 1000;

/// A fixed-window limit per merchant and channel.
#[derive(Default)]
struct Limits {
    windows: Mutex<HashMap<(String, Channel), (i64, u32)>>,
}

impl Limits {
    /// Whether one more message may go now; when not, the time the next window opens.
    fn take(&self, merchant: &str, channel: Channel, per_second: u32, now_ms: i64) -> Result<(), i64> {
        let second = now_ms.div_euclid(1000);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let slot = w.entry((merchant.to_string(), channel)).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        if slot.1 >= per_second {
            return Err((second + 1) * 1000);
        }
        slot.1 += 1;
        Ok(())
    }
}

fn per_second(s: &pb::NotifierSettings, c: Channel) -> u32 {
    let set = match c {
        Channel::MiniProgram => s.mini_program.as_ref().map(|w| w.per_second_limit),
        Channel::OfficialAccount => s.official_account.as_ref().map(|w| w.per_second_limit),
        Channel::Sms => s.sms.as_ref().map(|w| w.per_second_limit),
        Channel::Log => None,
    };
    match set {
        Some(n) if n > 0 => n,
        _ => DEFAULT_PER_SECOND,
    }
}

/// What became of one taken notice.
enum Step {
    /// Tried: the outcome to record, and when the channel answered.
    Tried { channel: Channel, outcome: Outcome, at_ms: i64 },
    /// Not tried now (quiet hours, rate limit): wait until then.
    Wait(i64),
}

pub struct Sender {
    platform: Platform,
    channels: Arc<Channels>,
    limits: Limits,
    /// Woken when the follower has queued notices.
    queued: Arc<tokio::sync::Notify>,
}

pub fn spawn(platform: Platform, channels: Arc<Channels>, queued: Arc<tokio::sync::Notify>) {
    let sender = Arc::new(Sender { platform, channels, limits: Limits::default(), queued });
    tokio::spawn(async move {
        let platform = sender.platform.clone();
        let lease = tokio::select! {
            l = platform.store.acquire_lease("notifier.deliveries") => l,
            _ = platform.shutdown.wait() => return,
        };
        let _lease = match lease {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the notice sender's lease");
                return;
            }
        };
        loop {
            match store::release_notices(&platform.store).await {
                Ok(n) if n > 0 => tracing::info!(notices = n, "sending again notices whose outcome is unknown"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "releasing notices failed"),
            }
            match sender.run().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "notice sender failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = platform.shutdown.wait() => return,
                    }
                }
            }
        }
    });
}

impl Sender {
    async fn run(&self) -> anyhow::Result<()> {
        let mut clock = self.platform.clock.watch();
        // The previous pass's outcomes, being recorded while the next pass is taken and sent (its
        // rows stay `sending` until then, so no pass takes them again).
        let mut recording: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
        loop {
            if self.platform.shutdown.is_triggered() {
                if let Some(r) = recording.take() {
                    r.await??;
                }
                return Ok(());
            }
            let now = self.platform.clock.now_ms();
            let rows = store::claim_notices(&self.platform.store, now, BATCH).await?;
            if rows.is_empty() {
                // Outcomes recorded may have made notices due (a next channel): look again.
                if let Some(r) = recording.take() {
                    r.await??;
                    continue;
                }
                tokio::select! {
                    _ = self.queued.notified() => {}
                    _ = clock.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.platform.shutdown.wait() => return Ok(()),
                }
                continue;
            }
            let steps = self.pass(rows, now).await?;
            if let Some(r) = recording.take() {
                r.await??;
            }
            let store = self.platform.store.clone();
            recording = Some(tokio::spawn(async move { record(&store, steps, now).await }));
        }
    }

    /// Sends what was taken; the outcomes to record.
    async fn pass(&self, rows: Vec<OutboxRow>, now: i64) -> anyhow::Result<Vec<(OutboxRow, Payload, Step)>> {
        let store = &self.platform.store;
        let mut views: HashMap<String, Arc<pb::NotifierSettings>> = HashMap::new();
        for r in &rows {
            if !views.contains_key(&r.merchant_id) {
                let s = settings::decode_settings(&store::settings_of(store, &r.merchant_id).await?);
                views.insert(r.merchant_id.clone(), Arc::new(s));
            }
        }
        let steps: Vec<(OutboxRow, Payload, Step)> = futures::stream::iter(rows)
            .map(|r| {
                let s = views.get(&r.merchant_id).cloned().unwrap_or_default();
                async move {
                    let payload: Payload = serde_json::from_str(&r.payload).unwrap_or_else(|_| Payload::empty());
                    let step = self.step(&r, &payload, &s, now).await;
                    (r, payload, step)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        Ok(steps)
    }

    /// Sends one notice on its current channel, unless quiet hours or the rate limit hold it.
    async fn step(&self, r: &OutboxRow, p: &Payload, s: &pb::NotifierSettings, now: i64) -> Step {
        let channels: Vec<Channel> = r.channels.split(',').filter_map(Channel::from_name).collect();
        let Some(&channel) = channels.get(r.channel_index as usize) else {
            return Step::Tried {
                channel: Channel::Log,
                outcome: Outcome::Refused { detail: "no channel left".into() },
                at_ms: now,
            };
        };
        let kind = NoticeKind::from_name(&p.kind).unwrap_or(NoticeKind::ChargeSucceeded);
        if channel.keeps_quiet_hours() && r.payer_acted == 0 {
            let zone = autodebit_domain::cycle::zone(&p.time_zone).unwrap_or(chrono_tz::Asia::Shanghai);
            if let Ok(Some(q)) = QuietHours::parse(&s.quiet_hours) {
                let at = autodebit_domain::clock::from_millis(now);
                let next = q.next_allowed(at, zone);
                if next > at {
                    return Step::Wait(next.timestamp_millis());
                }
            }
        }
        if let Err(next) = self.limits.take(&r.merchant_id, channel, per_second(s, channel), now) {
            return Step::Wait(next);
        }
        let Some(c) = self.channels.get(channel) else {
            return Step::Tried {
                channel,
                outcome: Outcome::Refused { detail: "channel not available".into() },
                at_ms: now,
            };
        };
        let msg = Outgoing {
            notice_id: &r.notice_id,
            kind,
            merchant_id: &r.merchant_id,
            recipient: &p.recipient,
            phone: &p.phone,
            text: &p.text,
            fields: &p.fields,
            link: &p.link,
            language: Language::parse(&p.language).unwrap_or_default(),
        };
        let outcome = c.send(s, &msg).await;
        autodebit_runtime::metrics::add(
            autodebit_runtime::metrics::NOTICE_DELIVERIES,
            &[("channel", channel.name()), ("outcome", outcome_name(&outcome))],
            1,
        );
        Step::Tried { channel, outcome, at_ms: self.platform.clock.now_ms() }
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Sent { .. } => "sent",
        Outcome::Refused { .. } => "refused",
        Outcome::Failed { .. } => "failed",
    }
}

impl Payload {
    fn empty() -> Payload {
        Payload {
            kind: String::new(),
            recipient: String::new(),
            phone: String::new(),
            contract_id: String::new(),
            text: String::new(),
            fields: Default::default(),
            link: String::new(),
            language: String::new(),
            time_zone: String::new(),
        }
    }
}

/// Records a pass's outcomes in one transaction: each try an event on the notice's stream and a
/// row in `notifier_deliveries`; each outbox row moved on (done, next channel, later).
async fn record(store: &EventStore, steps: Vec<(OutboxRow, Payload, Step)>, now: i64) -> anyhow::Result<()> {
    let mut outbox = Vec::with_capacity(steps.len());
    let mut deliveries = Vec::new();
    let mut states = Vec::new();
    let mut appends = Vec::new();
    let mut sent_ids: HashMap<&'static str, Vec<String>> = HashMap::new();
    for (r, p, step) in steps {
        let (channel, outcome, sent_at) = match step {
            Step::Wait(until) => {
                outbox.push(serde_json::json!([r.notice_id, "pending", r.channel_index, r.attempt, until]));
                continue;
            }
            Step::Tried { channel, outcome, at_ms } => (channel, outcome, at_ms),
        };
        let tries = r.attempt + 1;
        let last_channel = r.channels.split(',').count() as i64 - 1;
        let (pb_outcome, message_id, detail) = match &outcome {
            Outcome::Sent { message_id } => (pb::DeliveryOutcome::Sent, message_id.clone(), String::new()),
            Outcome::Refused { detail } => (pb::DeliveryOutcome::Refused, String::new(), detail.clone()),
            Outcome::Failed { detail, .. } => (pb::DeliveryOutcome::Failed, String::new(), detail.clone()),
        };
        match &outcome {
            Outcome::Sent { message_id } => {
                sent_ids.entry(channel.name()).or_default().push(message_id.clone());
                outbox.push(serde_json::json!([r.notice_id, "done", r.channel_index, tries, now]));
                states.push(serde_json::json!([r.notice_id, "sent", channel.name()]));
            }
            Outcome::Failed { retryable: true, .. } if tries < TRIES_PER_CHANNEL => {
                // 30 s, 2 min, 8 min on the same channel.
                let wait = 30_000 * 4_i64.pow(u32::try_from(tries - 1).unwrap_or(0));
                outbox.push(serde_json::json!([r.notice_id, "pending", r.channel_index, tries, now + wait]));
            }
            _ if r.channel_index < last_channel => {
                outbox.push(serde_json::json!([r.notice_id, "pending", r.channel_index + 1, 0, now]));
            }
            _ => {
                outbox.push(serde_json::json!([r.notice_id, "done", r.channel_index, tries, now]));
                states.push(serde_json::json!([r.notice_id, "failed", ""]));
            }
        }
        deliveries.push(serde_json::json!([
            r.notice_id,
            channel.name(),
            pb_outcome as i64,
            message_id,
            detail,
            sent_at
        ]));
        let kind = NoticeKind::from_name(&p.kind).map(crate::app::kind_to_pb).unwrap_or_default();
        let event = pb::Event {
            kind: Some(EventKind::NoticeDeliveryRecorded(pb::NoticeDeliveryRecorded {
                notice_id: r.notice_id.clone(),
                merchant_id: r.merchant_id.clone(),
                contract_id: p.contract_id.clone(),
                kind: kind as i32,
                channel: channel.name().to_string(),
                outcome: pb_outcome as i32,
                provider_message_id: message_id,
                detail,
                attempt: u32::try_from(tries).unwrap_or(u32::MAX),
                at_ms: sent_at,
            })),
        };
        appends.push(StreamAppend {
            stream: format!("notice-{}", r.notice_id),
            expected: ExpectedVersion::Any,
            events: vec![codec::encode(event, &Cause::request(format!("deliver/{}", r.notice_id)), now)],
        });
    }
    let mut tx = store.begin().await?;
    tx.append_many(&appends).await?;
    store::insert_deliveries(&mut tx, deliveries).await?;
    store::update_outbox(&mut tx, outbox).await?;
    store::set_notice_states(&mut tx, states).await?;
    // Receipts that came before these sends were recorded.
    for (channel, ids) in sent_ids {
        for r in store::take_early_receipts(&mut tx, channel, &ids).await? {
            if let Some(n) = store::notice_of_message_in(&mut tx, &r.channel, &r.provider_message_id).await? {
                crate::app::receipts::apply(&mut tx, &n, &r, now).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_is_per_merchant_channel_and_second() {
        let l = Limits::default();
        assert!(l.take("m", Channel::Sms, 2, 1_000).is_ok());
        assert!(l.take("m", Channel::Sms, 2, 1_500).is_ok());
        assert_eq!(l.take("m", Channel::Sms, 2, 1_999), Err(2_000));
        assert!(l.take("m", Channel::MiniProgram, 2, 1_999).is_ok(), "another channel");
        assert!(l.take("n", Channel::Sms, 2, 1_999).is_ok(), "another merchant");
        assert!(l.take("m", Channel::Sms, 2, 2_000).is_ok(), "the next second");
    }
}
