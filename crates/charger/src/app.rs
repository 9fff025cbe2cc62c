//! The charger's use cases: what a provider said of attempts (from the worker or a callback),
//! refunds asked for and their outcomes, and charges read back. Every change to a charge goes
//! through `runtime::repository` with the table hook that keeps `store` in step.
//!
//! A refund is decided on the charge stream itself (`RefundRequested`, appended at the version
//! the decision read), so two refunds asked for at once cannot together exceed what the charge
//! took: the second append fails on its version and is decided again on the new state.
use crate::store::{self, AttemptRow, EndedRefund, RequestedRefunds, SettledAttempts};
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeError, ChargeEvent, ChargeState};
use autodebit_domain::{ChargeId, Money};
use autodebit_eventstore::StoreError;
use autodebit_provider::{Lookup, ProviderOutcome, RefundOutcome};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::repository::{self, VersionMismatch};

/// Times a command is decided again when its charge moved on meanwhile.
const TRIES: u32 = 5;

/// Why a use case did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Rule(#[from] ChargeError),
    #[error("charge_id: {0} not found")]
    NotFound(ChargeId),
    #[error("the charge changed {0} times while the refund was decided; try again")]
    Busy(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] VersionMismatch),
}

impl AppError {
    fn is_conflict(&self) -> bool {
        matches!(self, AppError::Store(e) if e.is_conflict())
    }
}

// ---------------------------------------------------------------------------------------------
// Attempts

/// What became of a claimed attempt.
#[derive(Debug)]
pub enum Resolution {
    /// It ended at the provider.
    Ended(AttemptRow, ProviderOutcome),
    /// Not known yet: ask again at `next_due_ms` (machine time).
    Later(AttemptRow, String, i64),
}

/// The command that records what the provider said of an attempt; `None` while unknown.
fn outcome_command(outcome: &ProviderOutcome) -> Option<ChargeCommand> {
    match outcome {
        ProviderOutcome::Succeeded { transaction_id } => {
            Some(ChargeCommand::RecordSuccess { provider_transaction_id: transaction_id.clone() })
        }
        ProviderOutcome::Declined { code, message, retryable } => Some(ChargeCommand::RecordFailure {
            provider_code: code.clone(),
            message: message.clone(),
            retryable: *retryable,
        }),
        ProviderOutcome::Unknown { .. } => None,
    }
}

/// The histogram of the time from an attempt's start to its recorded outcome (milliseconds).
pub const SETTLE_LATENCY: &str = autodebit_runtime::metrics::CHARGE_SETTLE_MS;

/// Records each ended attempt's outcome on its charge stream, at the version the attempt left
/// it, and drops its row; moves each undecided one's next question on. One transaction for the
/// batch. An outcome someone recorded first (a callback, another worker) is left as it is.
pub async fn record_outcomes(platform: &Platform, batch: &[Resolution]) -> anyhow::Result<()> {
    let now = platform.clock.now();
    let mut decided = Vec::new();
    let mut settled = SettledAttempts { ended: Vec::new(), later: Vec::new() };
    for r in batch {
        match r {
            Resolution::Ended(row, outcome) => {
                let cause = Cause::request(format!("{}/attempt/{}", row.charge.charge_id, row.charge.attempt));
                // The outcome continues the attempt's trace.
                let decision = outcome_command(outcome).and_then(|command| {
                    autodebit_runtime::telemetry::with_traceparent(&row.trace, || {
                        repository::decide::<Charge>(row.charge.charge_id.stream(), row.loaded(), command, now, &cause)
                    })
                    .ok()
                });
                decided.extend(decision);
                settled.ended.push(row.out_trade_no.as_str());
            }
            Resolution::Later(row, reason, next_due_ms) => {
                // Every WeChat Pay deduction passes here once (accepted, result to come).
                tracing::debug!(out_trade_no = row.out_trade_no, reason, "attempt outcome not known yet; will ask");
                settled.later.push((row.out_trade_no.as_str(), *next_due_ms));
            }
        }
    }
    let mut tx = platform.store.begin().await?;
    let answers = repository::append_each_in::<Charge, _, StoreError>(&mut tx, decided, &settled).await?;
    let (mut succeeded, mut failed) = (0i64, 0i64);
    for answer in answers {
        match answer {
            Ok(done) if done.events.iter().any(|e| matches!(e, ChargeEvent::Succeeded { .. })) => succeeded += 1,
            Ok(_) => failed += 1,
            // A callback or another worker recorded it first.
            Err(e) => tracing::debug!(error = %e, "outcome already recorded"),
        }
    }
    tx.commit().await?;
    let done = store::unix_ms();
    for r in batch {
        if let Resolution::Ended(row, _) = r {
            autodebit_runtime::metrics::observe_ms(SETTLE_LATENCY, &[], done - row.started_unix_ms);
        }
    }
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SUCCEEDED, &[], succeeded);
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_FAILED, &[], failed);
    autodebit_runtime::metrics::add(
        autodebit_runtime::metrics::CHARGE_OUTCOMES,
        &[("outcome", "succeeded")],
        succeeded,
    );
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGE_OUTCOMES, &[("outcome", "failed")], failed);
    Ok(())
}

/// What a deduction result from the provider came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deduction {
    /// Its outcome is recorded (or was, by whoever came first).
    Recorded,
    /// Nothing decided yet: the worker keeps asking.
    Pending,
    /// Delivered again after its outcome was recorded.
    Redelivered,
}

/// Why a deduction result was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeductionError {
    /// Not an order of this merchant's that the platform sent.
    #[error("unknown order")]
    UnknownOrder,
    /// It names another amount than the attempt's.
    #[error("total_fee {fee:?} is not the attempt's {amount}")]
    AmountMismatch { fee: Option<i64>, amount: i64 },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A deduction's result, from a v2 callback or a v3 notice, for `merchant`: the order
/// `out_trade_no` of `fee` (where the result names one) is in `state`. Recorded as the
/// worker's query answer would be, so whichever arrives first decides.
pub async fn record_deduction(
    platform: &Platform,
    merchant: &str,
    out_trade_no: &str,
    fee: Option<i64>,
    state: Lookup,
) -> Result<Deduction, DeductionError> {
    let Some(row) = store::find_attempt(&platform.store, out_trade_no).await.map_err(anyhow::Error::from)? else {
        // Not waiting: delivered again after its outcome was recorded, or never ours.
        let (charge, attempt) = ChargeId::from_out_trade_no(out_trade_no).ok_or(DeductionError::UnknownOrder)?;
        let loaded =
            repository::load::<Charge>(&platform.store, &charge.stream()).await.map_err(anyhow::Error::from)?;
        let sent = loaded.state.is_some_and(|c| c.started > 0);
        return if !sent || attempt == 0 { Err(DeductionError::UnknownOrder) } else { Ok(Deduction::Redelivered) };
    };
    if row.charge.merchant_id.as_str() != merchant {
        return Err(DeductionError::UnknownOrder);
    }
    let amount = row.charge.amount.minor_units();
    if fee.is_some_and(|f| f != amount) {
        return Err(DeductionError::AmountMismatch { fee, amount });
    }
    match state {
        Lookup::Ended(outcome) => {
            record_outcomes(platform, &[Resolution::Ended(row, outcome)]).await?;
            Ok(Deduction::Recorded)
        }
        Lookup::Pending { .. } | Lookup::NotFound => Ok(Deduction::Pending),
    }
}

/// Takes a v3 callback's nonce as used; `false` if it was used before (a replay).
pub async fn fresh_nonce(platform: &Platform, nonce: &str) -> Result<bool, StoreError> {
    let now = store::unix_ms();
    store::remember_nonce(&platform.store, nonce, now, now - NONCE_MEMORY_MS).await
}

/// How long a v3 nonce is remembered: past the five minutes a timestamp may be off, a replay
/// fails on its timestamp instead.
const NONCE_MEMORY_MS: i64 = 15 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Charges and refunds

/// The charge `id` and its stream's version, if `who` may see it (another merchant's is as good
/// as missing).
pub async fn charge_for(platform: &Platform, who: &Principal, id: ChargeId) -> Result<(Charge, u64), AppError> {
    let loaded = repository::load::<Charge>(&platform.store, &id.stream()).await?;
    loaded.state.filter(|c| who.may_see(&c.merchant_id)).map(|c| (c, loaded.version)).ok_or(AppError::NotFound(id))
}

/// A refund asked for: the charge after it, the refund's id, and whether it was asked for
/// before (under the same key, for the same amount).
#[derive(Debug)]
pub struct Refunded {
    pub charge: Charge,
    pub refund_id: String,
    pub duplicate: bool,
}

/// Asks for a refund of `amount` of the charge `id`, under the merchant's `idempotency_key`.
pub async fn refund(
    platform: &Platform,
    who: &Principal,
    id: ChargeId,
    idempotency_key: &str,
    amount: Money,
    reason: &str,
) -> Result<Refunded, AppError> {
    let (charge, _) = charge_for(platform, who, id).await?;
    let refund_id = charge::refund_id(id, idempotency_key);
    // The same key: the same refund, or a refusal if it asked for another amount.
    if let Some(earlier) = charge.repeated_refund(&refund_id, amount) {
        earlier?;
        return Ok(Refunded { charge, refund_id, duplicate: true });
    }
    let command = ChargeCommand::Refund { refund_id: refund_id.clone(), amount, reason: reason.to_string() };
    let charge = request_refund(platform, id, &refund_id, command).await?;
    Ok(Refunded { charge, refund_id, duplicate: false })
}

/// The refund of a duplicate debit of charge `id`: the same debit, the same refund.
pub fn duplicate_refund_id(id: ChargeId, duplicate: &charge::Duplicate) -> String {
    charge::refund_id(id, &format!("duplicate:{}:{}", duplicate.out_trade_no, duplicate.transaction_id))
}

/// Pays back a second debit of the charge `id` that reconciliation found (`amount` taken under
/// `duplicate`'s order number, in the charge's currency); asked for once per debit. The
/// refund's id.
pub async fn refund_duplicate(
    platform: &Platform,
    id: ChargeId,
    duplicate: charge::Duplicate,
    minor_units: i64,
) -> Result<String, AppError> {
    let refund_id = duplicate_refund_id(id, &duplicate);
    let c = load_charge(platform, id).await?.ok_or(AppError::NotFound(id))?;
    let amount = Money::new(minor_units, c.amount.currency());
    if c.refund(&refund_id).is_none() {
        let command = ChargeCommand::RefundDuplicate { refund_id: refund_id.clone(), duplicate, amount };
        request_refund(platform, id, &refund_id, command).await?;
    }
    Ok(refund_id)
}

/// Decides and appends `RefundRequested` with its work row; decided again if the charge moved
/// on meanwhile.
async fn request_refund(
    platform: &Platform,
    id: ChargeId,
    refund_id: &str,
    command: ChargeCommand,
) -> Result<Charge, AppError> {
    let cause = Cause::request(format!("{refund_id}/request"));
    for _ in 0..TRIES {
        let command = command.clone();
        let mut tx = platform.store.begin().await?;
        let now = platform.clock.now();
        match repository::execute_in::<Charge, _, AppError>(
            &mut tx,
            &id.stream(),
            None,
            command,
            now,
            &cause,
            &RequestedRefunds,
        )
        .await
        {
            // Another refund (or an outcome) moved the charge on since it was read: decide again.
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
            Ok(done) => {
                tx.commit().await?;
                return done.state.ok_or(AppError::NotFound(id));
            }
        }
    }
    Err(AppError::Busy(TRIES))
}

/// What a provider's refund answer (or notice) says of a refund: its outcome command, or
/// `None` while it is still processing.
pub fn refund_outcome_command(refund_id: &str, outcome: RefundOutcome) -> Option<ChargeCommand> {
    match outcome {
        RefundOutcome::Succeeded { refund_id: provider_refund_id } => {
            Some(ChargeCommand::RecordRefundSuccess { refund_id: refund_id.to_string(), provider_refund_id })
        }
        RefundOutcome::Failed { code, message } => {
            Some(ChargeCommand::RecordRefundFailure { refund_id: refund_id.to_string(), provider_code: code, message })
        }
        RefundOutcome::Unknown { .. } => None,
    }
}

/// Records a refund's outcome once (a second answer, or a notice after the answer, finds it
/// recorded and changes nothing) and drops its work row. Decided on the charge as it is now:
/// other refunds may move its stream on meanwhile, and then it is decided again.
pub async fn record_refund_outcome(
    platform: &Platform,
    charge: ChargeId,
    refund_id: &str,
    command: ChargeCommand,
) -> anyhow::Result<()> {
    let cause = Cause::request(format!("{refund_id}/outcome"));
    for _ in 0..TRIES {
        let mut tx = platform.store.begin().await?;
        let now = platform.clock.now();
        let hook = EndedRefund(refund_id);
        match repository::execute_in::<Charge, _, AppError>(
            &mut tx,
            &charge.stream(),
            None,
            command.clone(),
            now,
            &cause,
            &hook,
        )
        .await
        {
            Ok(done) => {
                let succeeded = done.events.iter().any(|e| matches!(e, ChargeEvent::RefundSucceeded { .. }));
                let name = if succeeded { "succeeded" } else { "failed" };
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::REFUNDS, &[("outcome", name)], 1);
            }
            // Ended already (recorded by an earlier pass, or its answer and notice both came).
            Err(AppError::Rule(ChargeError::RefundNotPending(_))) => store::drop_refund(&mut tx, refund_id).await?,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        return Ok(());
    }
    anyhow::bail!("refund {refund_id}: its charge kept changing while the outcome was recorded")
}

/// What a provider's refund notice came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundNotice {
    Recorded,
    Pending,
}

/// Why a refund notice was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RefundNoticeError {
    /// Not a refund of this merchant's.
    #[error("unknown refund")]
    UnknownRefund,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A provider's notice of a refund's result, for `merchant`: recorded like the refund call's
/// own answer, once.
pub async fn record_refund_notice(
    platform: &Platform,
    merchant: &str,
    refund_id: &str,
    outcome: RefundOutcome,
) -> Result<RefundNotice, RefundNoticeError> {
    let charge = charge::refunded_charge(refund_id).ok_or(RefundNoticeError::UnknownRefund)?;
    let loaded = repository::load::<Charge>(&platform.store, &charge.stream()).await.map_err(anyhow::Error::from)?;
    let c = loaded.state.filter(|c| c.merchant_id.as_str() == merchant).ok_or(RefundNoticeError::UnknownRefund)?;
    c.refund(refund_id).ok_or(RefundNoticeError::UnknownRefund)?;
    match refund_outcome_command(refund_id, outcome) {
        Some(command) => {
            record_refund_outcome(platform, charge, refund_id, command).await?;
            Ok(RefundNotice::Recorded)
        }
        None => Ok(RefundNotice::Pending),
    }
}

/// A charge as it stands, for a worker about to carry out one of its refunds.
pub async fn load_charge(platform: &Platform, id: ChargeId) -> Result<ChargeState, StoreError> {
    Ok(repository::load::<Charge>(&platform.store, &id.stream()).await?.state)
}
