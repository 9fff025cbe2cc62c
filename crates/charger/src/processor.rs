//! Follows `ChargeScheduled`: calls the provider (before the transaction, so no database lock
//! is held while it answers), then records each charge's outcome with the checkpoint.
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeStatus};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{ChargeId, ContractId, MerchantId, PayerId};
use autodebit_eventstore::{ExpectedVersion, StreamAppend, Tx};
use autodebit_proto::EventKind;
use autodebit_provider::{ChargeAttempt, Provider, ProviderOutcome};
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use futures::StreamExt;
use std::sync::Arc;

pub struct ChargeExecutor {
    provider: Arc<dyn Provider>,
    clock: PlatformClock,
    concurrency: usize,
}

impl ChargeExecutor {
    pub fn new(provider: Arc<dyn Provider>, clock: PlatformClock, concurrency: usize) -> Self {
        ChargeExecutor { provider, clock, concurrency: concurrency.max(1) }
    }
}

impl Processor for ChargeExecutor {
    /// The provider's answer for each event of the batch, by index.
    type Prepared = Vec<Option<ProviderOutcome>>;

    fn name(&self) -> &'static str {
        "charger.charges"
    }

    fn wants(&self, kind: &EventKind) -> bool {
        matches!(kind, EventKind::ChargeScheduled(_) | EventKind::ChargeRetryScheduled(_))
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Self::Prepared> {
        let work: Vec<Option<Charge>> = events.iter().map(attempt_of).collect();
        let calls = work.into_iter().map(|w| {
            let provider = self.provider.clone();
            async move {
                let c = w?;
                Some(provider.charge(&ChargeAttempt::new(c.charge_id, c.merchant_id, c.attempt, c.amount)).await)
            }
        });
        Ok(futures::stream::iter(calls).buffered(self.concurrency).collect().await)
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], outcomes: Self::Prepared) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut appends = Vec::with_capacity(events.len());
        for (d, outcome) in events.iter().zip(outcomes) {
            let (Some(attempt), Some(outcome)) = (attempt_of(d), outcome) else {
                tracing::error!(stream = d.stream, "damaged charge event skipped");
                continue;
            };
            let state = Some(attempt);
            let command = match outcome {
                ProviderOutcome::Succeeded { transaction_id } => {
                    ChargeCommand::RecordSuccess { provider_transaction_id: transaction_id }
                }
                ProviderOutcome::Declined { code, message, retryable } => {
                    ChargeCommand::RecordFailure { provider_code: code, message, retryable }
                }
            };
            let events_out = charge::decide(&state, command, now)?;
            let cause = Cause::of(d);
            let encoded = events_out
                .iter()
                .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
                .map(|e| codec::encode(e, &cause, now.timestamp_millis()))
                .collect();
            appends.push(StreamAppend {
                stream: d.stream.clone(),
                expected: ExpectedVersion::Exact(d.version),
                events: encoded,
            });
        }
        if !appends.is_empty() {
            tx.append_many(&appends).await?;
        }
        Ok(())
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
        }),
        _ => None,
    }
}
