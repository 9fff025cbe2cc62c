//! The charger's log followers.
//!
//! `AttemptStarter` follows `ChargeScheduled` and `ChargeRetryScheduled`: starts the attempt —
//! appends `ChargeAttemptStarted` with its order number and writes its row in
//! `charger_attempts` — in the transaction that moves the checkpoint on. The provider is called
//! afterwards, by the attempts worker (`worker::attempts`), once this is committed.
//!
//! `ProviderNotices` tells the merchant's provider of pre-debit notices and terminations.
use crate::Providers;
use crate::store::{self, AttemptRow, StartedAttempts};
use crate::worker::attempts::{self, Dispatch};
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeStatus};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{ChargeId, ContractId, MerchantId, PayerId};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_proto::EventKind;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::repository::{self, Decided, Loaded};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

pub struct AttemptStarter {
    providers: Arc<Providers>,
    clock: PlatformClock,
    dispatch: Dispatch,
    /// Attempts written already claimed by the batch being applied, with their slots: sent
    /// once that batch commits.
    claimed: std::sync::Mutex<Vec<(AttemptRow, OwnedSemaphorePermit)>>,
}

impl AttemptStarter {
    pub fn new(providers: Arc<Providers>, clock: PlatformClock, dispatch: Dispatch) -> Self {
        AttemptStarter { providers, clock, dispatch, claimed: Default::default() }
    }
}

/// A batch's attempts, worked out before its transaction: each charge's `StartAttempt`,
/// decided on the charge as the followed event left it, and the worker slots free for them.
pub struct Starts {
    decided: Vec<Decided<Charge>>,
    slots: Vec<OwnedSemaphorePermit>,
    /// The trace each charge was scheduled under, which its attempt continues.
    traces: std::collections::HashMap<ChargeId, String>,
}

impl Processor for AttemptStarter {
    /// Everything but the writes, done before the transaction opens, so that the one writer
    /// is held only for them; with the worker's free slots, as many as there are attempts
    /// written already claimed.
    type Prepared = Starts;

    fn name(&self) -> &'static str {
        "charger.charges"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["ChargeScheduled", "ChargeRetryScheduled"]
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Starts> {
        let now = self.clock.now();
        let mut decided = Vec::with_capacity(events.len());
        let mut traces = std::collections::HashMap::with_capacity(events.len());
        for d in events {
            let Some(state) = attempt_of(d) else {
                tracing::error!(stream = d.stream, "damaged charge event skipped");
                continue;
            };
            let provider = self.providers.for_merchant(state.merchant_id.as_str()).name().to_string();
            let command = ChargeCommand::StartAttempt { provider };
            let charge = state.charge_id;
            let loaded = Loaded { state: Some(state), version: d.version };
            // The attempt's start continues its charge's trace, not the batch's.
            let start = autodebit_runtime::telemetry::with_traceparent(&d.meta.traceparent, || {
                repository::decide::<Charge>(d.stream.clone(), loaded, command, now, &Cause::of(d))
            });
            let Ok(start) = start else { continue };
            decided.push(start);
            if !d.meta.traceparent.is_empty() {
                traces.insert(charge, d.meta.traceparent.clone());
            }
        }
        let slots = self.dispatch.reserve(decided.len());
        Ok(Starts { decided, slots, traces })
    }

    async fn apply(&self, tx: &mut Tx, _: &[Decoded], starts: Starts) -> anyhow::Result<()> {
        // Left by a batch whose commit failed: its rows, if written after all, are found again
        // when their lease runs out.
        self.claimed.lock().expect("claimed attempts").clear();
        let Starts { decided, slots, traces } = starts;
        // A stream that moved on since (replayed events) keeps what it has; its row is not
        // written. The first started ones, as many as there are free slots, are written
        // already claimed.
        let hook = StartedAttempts { leased: slots.len(), lease_until: attempts::lease_until(), traces };
        let answers = repository::append_each_in::<Charge, _, StoreError>(tx, decided, &hook).await?;
        let mut started = Vec::with_capacity(slots.len());
        for answer in &answers {
            match answer {
                Ok(done) if started.len() < slots.len() => started.extend(AttemptRow::started(done, &hook.traces)),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "attempt started before"),
            }
        }
        let contracts: Vec<String> = started.iter().map(|r| r.charge.contract_id.to_string()).collect();
        let at_provider = store::provider_contract_ids(tx, &contracts).await?;
        for row in &mut started {
            if let Some(id) = at_provider.get(&row.charge.contract_id.to_string()) {
                row.provider_contract_id = id.clone();
            }
        }
        *self.claimed.lock().expect("claimed attempts") = started.into_iter().zip(slots).collect();
        Ok(())
    }

    fn abandoned(&self) {
        // Their rows, if written after all, are found again when their lease runs out.
        self.claimed.lock().expect("claimed attempts").clear();
    }

    fn committed(&self) {
        for (row, slot) in std::mem::take(&mut *self.claimed.lock().expect("claimed attempts")) {
            self.dispatch.send(row, slot);
        }
    }
}

/// The charge as it stands when an attempt is due: from its `ChargeScheduled` (attempt 1) or
/// from a `ChargeRetryScheduled`, which carries what the attempt needs.
fn attempt_of(d: &Decoded) -> Option<Charge> {
    match &d.kind {
        EventKind::ChargeScheduled(_) => charge::apply(None, &codec::charge_event_from_pb(&d.kind)?),
        EventKind::ChargeRetryScheduled(r) => Some(Charge {
            charge_id: ChargeId::parse(&r.charge_id).ok()?,
            contract_id: ContractId::parse(&r.contract_id).ok()?,
            merchant_id: MerchantId::parse(&r.merchant_id).ok()?,
            payer_id: PayerId::parse(&r.payer_id).ok()?,
            amount: codec::money_from_pb(r.amount.as_ref()).ok()?,
            period: 0,
            due_at: from_millis(r.scheduled_at_ms),
            status: ChargeStatus::Scheduled,
            provider_transaction_id: None,
            code: None,
            message: None,
            attempt: r.attempt,
            retryable: false,
            started: 0,
            out_trade_no: None,
            refunds: Vec::new(),
            hold: None,
        }),
        _ => None,
    }
}

/// Tells the merchant's provider what the payer must hear from it or what ended: each
/// pre-debit notice goes to the provider too (WeChat Pay's pre-deduction notice, which its
/// papay requires before a deduction), and a contract terminated on the platform is deleted at
/// WeChat Pay where it was signed there. Calls are made before the transaction and tried a few
/// times; one that still fails is logged and counted, not retried forever (the deduction that
/// follows is then declined by the provider, and handled as any decline).
pub struct ProviderNotices {
    providers: Arc<Providers>,
    store: autodebit_eventstore::EventStore,
    clock: autodebit_runtime::PlatformClock,
}

/// What telling the provider came to: the contract it deleted, the pre-debit notice's delivery
/// on the provider's channel (recorded in the stream `provider-notice-<charge>`, which the
/// notifier lists with the payer's notice).
#[derive(Default)]
pub struct Told {
    deleted: Option<String>,
    delivery: Option<(String, autodebit_proto::events::v1::NoticeDeliveryRecorded)>,
}

impl ProviderNotices {
    pub fn new(
        providers: Arc<Providers>,
        store: autodebit_eventstore::EventStore,
        clock: autodebit_runtime::PlatformClock,
    ) -> Self {
        ProviderNotices { providers, store, clock }
    }

    /// The merchant and WeChat Pay contract id of a contract signed at WeChat Pay.
    async fn signed_at_provider(&self, contract_id: &str) -> anyhow::Result<Option<(String, String)>> {
        Ok(store::signed_at_provider(&self.store, contract_id).await?)
    }
}

/// Tries `call` up to three times, 200 ms and then 400 ms apart, while it fails in transport.
async fn with_tries<F, Fut>(what: &str, call: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), autodebit_provider::ProviderError>>,
{
    use backon::Retryable;
    let tries =
        backon::ExponentialBuilder::new().with_min_delay(std::time::Duration::from_millis(200)).with_max_times(2);
    call.retry(tries)
        .when(|e| matches!(e, autodebit_provider::ProviderError::Transport(_)))
        .notify(|e, _| tracing::warn!(what, error = %e, "provider call failed; trying again"))
        .await
        .inspect_err(|e| tracing::error!(what, error = %e, "provider call failed"))
        .is_ok()
}

impl Processor for ProviderNotices {
    /// What each event's telling came to.
    type Prepared = Vec<Told>;

    fn name(&self) -> &'static str {
        "charger.provider_notices"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["PreDebitNoticeIssued", "ContractTerminated", "ProviderContractChanged"]
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Vec<Told>> {
        use futures::StreamExt;
        let calls: Vec<autodebit_provider::BoxFuture<'_, anyhow::Result<Told>>> =
            events.iter().map(|d| Box::pin(self.tell(d)) as autodebit_provider::BoxFuture<'_, _>).collect();
        let told: Vec<anyhow::Result<Told>> =
            futures::stream::iter(calls).buffered(PROVIDER_NOTICES_IN_FLIGHT).collect().await;
        told.into_iter().collect()
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], told: Vec<Told>) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let mut deleted = Vec::new();
        for (d, t) in events.iter().zip(told) {
            deleted.extend(t.deleted);
            if let Some((stream, delivery)) = t.delivery {
                let event =
                    autodebit_proto::events::v1::Event { kind: Some(EventKind::NoticeDeliveryRecorded(delivery)) };
                let cause = codec::Cause::of(d);
                tx.append(&stream, autodebit_eventstore::ExpectedVersion::Any, vec![codec::encode(event, &cause, now)])
                    .await?;
            }
        }
        // What WeChat Pay's notices said (through the contracts service): the contract's id
        // there, which deductions name, and whether WeChat Pay still holds it.
        for d in events {
            if let EventKind::ProviderContractChanged(c) = &d.kind {
                store::save_provider_contract(tx, c).await?;
            }
        }
        for contract in deleted {
            store::provider_contract_deleted(tx, &contract).await?;
        }
        Ok(())
    }
}

/// Provider notices in flight at once.
const PROVIDER_NOTICES_IN_FLIGHT: usize = 64;

impl ProviderNotices {
    /// Tells the provider of one event.
    async fn tell(&self, d: &Decoded) -> anyhow::Result<Told> {
        match &d.kind {
            EventKind::PreDebitNoticeIssued(n) => {
                let (Ok(merchant_id), Ok(contract_id), Ok(amount)) = (
                    MerchantId::parse(&n.merchant_id),
                    ContractId::parse(&n.contract_id),
                    codec::money_from_pb(n.estimated_amount.as_ref()),
                ) else {
                    return Ok(Told::default());
                };
                let provider = self.providers.for_merchant(merchant_id.as_str());
                // Only WeChat Pay knows contracts by an id of its own.
                let provider_contract_id = if provider.name() == "wechatpay" {
                    self.signed_at_provider(&n.contract_id).await?.map(|(_, id)| id).unwrap_or_default()
                } else {
                    String::new()
                };
                let notice =
                    autodebit_provider::PreDebitNotice { merchant_id, contract_id, provider_contract_id, amount };
                let ok = with_tries("pre-deduction notice", || provider.notify(&notice)).await;
                let outcome = if ok { "sent" } else { "failed" };
                autodebit_runtime::metrics::add(
                    autodebit_runtime::metrics::PROVIDER_NOTICES,
                    &[("provider", provider.name()), ("outcome", outcome)],
                    1,
                );
                use autodebit_proto::events::v1 as pb;
                let delivery = pb::NoticeDeliveryRecorded {
                    notice_id: autodebit_domain::notice::notice_id(&n.contract_id, &d.meta.event_id),
                    merchant_id: n.merchant_id.clone(),
                    contract_id: n.contract_id.clone(),
                    kind: pb::NoticeKind::PreDebit as i32,
                    channel: provider.name().to_string(),
                    outcome: if ok { pb::DeliveryOutcome::Sent } else { pb::DeliveryOutcome::Failed } as i32,
                    provider_message_id: String::new(),
                    detail: if ok { String::new() } else { "the provider refused or could not be reached".into() },
                    attempt: 1,
                    at_ms: self.clock.now_ms(),
                };
                Ok(Told { deleted: None, delivery: Some((format!("provider-notice-{}", n.charge_id), delivery)) })
            }
            // Ended by the provider itself: nothing to tell it.
            EventKind::ContractTerminated(t)
                if t.mode == autodebit_proto::events::v1::TerminationMode::Provider as i32 =>
            {
                Ok(Told::default())
            }
            EventKind::ContractTerminated(t) => {
                let Some((merchant, provider_contract_id)) = self.signed_at_provider(&t.contract_id).await? else {
                    return Ok(Told::default());
                };
                let (Ok(merchant_id), Ok(contract_id)) =
                    (MerchantId::parse(&merchant), ContractId::parse(&t.contract_id))
                else {
                    return Ok(Told::default());
                };
                let provider = self.providers.for_merchant(&merchant);
                let termination = autodebit_provider::Termination {
                    merchant_id,
                    contract_id,
                    provider_contract_id,
                    remark: if t.remark.is_empty() { "terminated".into() } else { t.remark.clone() },
                };
                let ok = with_tries("contract deletion", || provider.terminate(&termination)).await;
                Ok(Told { deleted: ok.then(|| t.contract_id.clone()), delivery: None })
            }
            _ => Ok(Told::default()),
        }
    }
}
