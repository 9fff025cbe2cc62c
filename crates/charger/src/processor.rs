//! Follows `ChargeScheduled`: calls the provider (before the transaction, so no database lock
//! is held while it answers), then records each charge's outcome with the checkpoint.
use crate::simulator::{ProviderOutcome, Simulator};
use autodebit_domain::charge::{self, ChargeCommand};
use autodebit_eventstore::{ExpectedVersion, StreamAppend, Tx};
use autodebit_proto::EventKind;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use futures::StreamExt;
use std::sync::Arc;

pub struct ChargeExecutor {
    provider: Arc<Simulator>,
    clock: PlatformClock,
    concurrency: usize,
}

impl ChargeExecutor {
    pub fn new(provider: Arc<Simulator>, clock: PlatformClock, concurrency: usize) -> Self {
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
        matches!(kind, EventKind::ChargeScheduled(_))
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<Self::Prepared> {
        let work: Vec<Option<(autodebit_domain::ChargeId, autodebit_domain::Money)>> = events
            .iter()
            .map(|d| match codec::charge_event_from_pb(&d.kind)? {
                charge::ChargeEvent::Scheduled { charge_id, amount, .. } => Some((charge_id, amount)),
                _ => None,
            })
            .collect();
        let calls = work.into_iter().map(|w| {
            let provider = self.provider.clone();
            async move {
                let (charge_id, amount) = w?;
                Some(provider.charge(charge_id, amount).await)
            }
        });
        Ok(futures::stream::iter(calls).buffered(self.concurrency).collect().await)
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], outcomes: Self::Prepared) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut appends = Vec::with_capacity(events.len());
        for (d, outcome) in events.iter().zip(outcomes) {
            let (Some(scheduled), Some(outcome)) = (codec::charge_event_from_pb(&d.kind), outcome) else {
                tracing::error!(stream = d.stream, "damaged ChargeScheduled skipped");
                continue;
            };
            let state = charge::apply(None, &scheduled);
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
