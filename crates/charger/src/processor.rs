//! Follows `ChargeScheduled` and `ChargeRetryScheduled`: starts the attempt — appends
//! `ChargeAttemptStarted` with its order number and writes its row in `charger_attempts` — in
//! the transaction that moves the checkpoint on. The provider is called afterwards, by the
//! attempts worker (`attempts`), once this is committed.
use crate::Providers;
use crate::attempts::{self, AttemptRow};
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeStatus};
use autodebit_domain::clock::from_millis;
use autodebit_domain::{ChargeId, ContractId, MerchantId, PayerId};
use autodebit_eventstore::{ExpectedVersion, StreamAppend, Tx};
use autodebit_proto::EventKind;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::{Decoded, PlatformClock, Processor};
use std::sync::Arc;

pub struct AttemptStarter {
    providers: Arc<Providers>,
    clock: PlatformClock,
}

impl AttemptStarter {
    pub fn new(providers: Arc<Providers>, clock: PlatformClock) -> Self {
        AttemptStarter { providers, clock }
    }
}

impl Processor for AttemptStarter {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "charger.charges"
    }

    fn wants(&self, kind: &EventKind) -> bool {
        matches!(kind, EventKind::ChargeScheduled(_) | EventKind::ChargeRetryScheduled(_))
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut appends = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for d in events {
            let Some(state) = attempt_of(d) else {
                tracing::error!(stream = d.stream, "damaged charge event skipped");
                continue;
            };
            let provider = self.providers.for_merchant(state.merchant_id.as_str()).name().to_string();
            let command = ChargeCommand::StartAttempt { provider: provider.clone() };
            let state = Some(state);
            let Ok(started) = charge::decide(&state, command, now) else { continue };
            let cause = Cause::of(d);
            let encoded = started
                .iter()
                .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
                .map(|e| codec::encode(e, &cause, now.timestamp_millis()))
                .collect();
            appends.push(StreamAppend {
                stream: d.stream.clone(),
                expected: ExpectedVersion::Exact(d.version),
                events: encoded,
            });
            let charge = started.iter().fold(state, charge::apply).expect("a started charge exists");
            rows.push(AttemptRow {
                out_trade_no: charge.out_trade_no.clone().unwrap_or_default(),
                charge,
                provider,
                stream_version: d.version + 1,
                sent: false,
                checks: 0,
                started_unix_ms: attempts::unix_ms(),
                provider_contract_id: String::new(),
            });
        }
        // A stream that moved on since (replayed events) keeps what it has; its row is not written.
        let outcomes = tx.append_each(&appends).await?;
        let started: Vec<AttemptRow> = rows
            .into_iter()
            .zip(&outcomes)
            .filter_map(|(row, o)| match o {
                Ok(_) => Some(row),
                Err(e) => {
                    tracing::debug!(out_trade_no = row.out_trade_no, error = %e, "attempt started before");
                    None
                }
            })
            .collect();
        attempts::insert(tx, &started).await
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
        }),
        _ => None,
    }
}

/// Keeps `charger_api_keys` in step with the merchants' keys, for the charger's API.
pub struct KeyFollower;

impl Processor for KeyFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "charger.keys"
    }

    fn wants(&self, kind: &EventKind) -> bool {
        matches!(kind, EventKind::ApiKeyIssued(_) | EventKind::ApiKeyRevoked(_))
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        for d in events {
            autodebit_runtime::auth::follow_key_event(tx, "charger_api_keys", &d.kind).await?;
        }
        Ok(())
    }
}
