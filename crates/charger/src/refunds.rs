//! Refunds: asked for through `RefundCharge`, carried out by a worker.
//!
//! A refund is decided on the charge stream itself (`RefundRequested`, appended at the version
//! the decision read), so two refunds asked for at once cannot together exceed what the charge
//! took: the second append fails on its version and is decided again on the new state. The
//! same transaction writes a row in `charger_refunds`; the worker sends each row's refund to
//! the merchant's provider under the refund's own number (`out_refund_no`, which a provider
//! pays back once however often it is sent), so a refund found again after a crash is simply
//! sent again. An answer records `RefundSucceeded` or `RefundFailed`; no answer (a timeout, a
//! refund still processing) is asked again 1 s, 2 s, … 5 minutes later.
use crate::Providers;
use crate::attempts::{gap, keys_json, unix_ms};
use autodebit_domain::charge::{self, Charge, ChargeCommand, ChargeState, RefundStatus};
use autodebit_domain::{ChargeId, Money};
use autodebit_eventstore::{EventStore, ExpectedVersion, StreamAppend, Tx, Value};
use autodebit_provider::{RefundOutcome, RefundRequest};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use std::sync::Arc;
use std::time::Duration;

/// How long a claimed refund is left to its claimer.
const LEASE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(500);
const CLAIM: i64 = 100;

/// A refund's id: the charge's, and a hash of the merchant's idempotency key — so the charge
/// is found from the refund, and the id fits WeChat Pay's `out_refund_no` (64 characters).
pub fn refund_id(charge: ChargeId, idempotency_key: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x51c4_0e7a_2b6d_4f1e_9a08_3c5d_7e2f_1b90);
    let hash = uuid::Uuid::new_v5(&NAMESPACE, format!("{charge}\0{idempotency_key}").as_bytes());
    let charge_hex = charge.to_string();
    let charge_hex = charge_hex.trim_start_matches("ch_");
    format!("rf_{charge_hex}_{}", &hash.simple().to_string()[..16])
}

/// The charge a refund id names.
pub fn charge_of(refund_id: &str) -> Option<ChargeId> {
    let rest = refund_id.strip_prefix("rf_")?;
    let (charge, hash) = rest.split_once('_')?;
    (hash.len() == 16).then_some(())?;
    ChargeId::parse(&format!("ch_{charge}")).ok()
}

/// A charge's state and its stream's version.
pub async fn load(store: &EventStore, charge: ChargeId) -> anyhow::Result<(ChargeState, u64)> {
    let records = store.read_stream(&charge.stream(), 0).await?;
    let version = records.last().map(|r| r.version).unwrap_or(0);
    let state = records
        .into_iter()
        .filter_map(codec::decode)
        .filter_map(|d| codec::charge_event_from_pb(&d.kind))
        .fold(None, |s, e| charge::apply(s, &e));
    Ok((state, version))
}

/// The append that takes `command` on a charge at `version`.
fn append(
    state: &ChargeState,
    version: u64,
    command: ChargeCommand,
    cause: &Cause,
    now: autodebit_domain::Timestamp,
) -> Result<StreamAppend, charge::ChargeError> {
    let c = state.as_ref().ok_or(charge::ChargeError::NotScheduled)?;
    let events = charge::decide(state, command, now)?;
    let encoded = events
        .iter()
        .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
        .map(|e| codec::encode(e, cause, now.timestamp_millis()))
        .collect();
    Ok(StreamAppend { stream: c.charge_id.stream(), expected: ExpectedVersion::Exact(version), events: encoded })
}

/// Why a refund could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Rule(#[from] charge::ChargeError),
    #[error("the charge changed {0} times while the refund was decided; try again")]
    Busy(u32),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Asks for a refund of `amount` of `charge`: decided on the charge's current state, appended
/// at that version with its work row, decided again if the charge moved on meanwhile.
pub async fn request(
    platform: &Platform,
    charge: ChargeId,
    refund_id: &str,
    amount: Money,
    reason: &str,
) -> Result<Charge, RequestError> {
    const TRIES: u32 = 5;
    for _ in 0..TRIES {
        let (state, version) = load(&platform.store, charge).await?;
        let now = platform.clock.now();
        let command = ChargeCommand::Refund { refund_id: refund_id.to_string(), amount, reason: reason.to_string() };
        let cause = Cause::request(format!("{refund_id}/request"));
        let append = append(&state, version, command, &cause, now)?;
        let mut tx = platform.store.begin().await.map_err(anyhow::Error::from)?;
        // Another refund (or an outcome) moved the charge on since it was read: decide again.
        let appended = match tx.append_each(std::slice::from_ref(&append)).await {
            Err(e) if e.is_conflict() => continue,
            other => other.map_err(anyhow::Error::from)?,
        };
        if let Some(Err(e)) = appended.first() {
            if e.is_conflict() {
                continue;
            }
            return Err(RequestError::Store(anyhow::anyhow!("{e}")));
        }
        insert(&mut tx, refund_id, charge, state.as_ref().map(|c| c.merchant_id.as_str()).unwrap_or_default()).await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        let (state, _) = load(&platform.store, charge).await?;
        return state.ok_or_else(|| RequestError::Store(anyhow::anyhow!("the charge vanished")));
    }
    Err(RequestError::Busy(TRIES))
}

async fn insert(tx: &mut Tx, refund_id: &str, charge: ChargeId, merchant: &str) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO charger_refunds (refund_id, charge_id, merchant_id, due_ms, checks) VALUES ($1, $2, $3, $4, 0)",
        &[Value::from(refund_id), Value::from(charge.to_string()), Value::from(merchant), Value::Int(unix_ms())],
    )
    .await?;
    Ok(())
}

/// Starts the refund worker.
pub fn spawn(platform: Platform, providers: Arc<Providers>) {
    tokio::spawn(async move {
        let mut commits = platform.store.watch_commits();
        loop {
            match pass(&platform, &providers).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "carrying out refunds failed; retrying");
                    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
                }
            }
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// Claims due refunds (leasing them), sends each, records what came back; returns how many.
async fn pass(platform: &Platform, providers: &Providers) -> anyhow::Result<usize> {
    let now = unix_ms();
    let any =
        platform.store.query("SELECT 1 FROM charger_refunds WHERE due_ms <= $1 LIMIT 1", &[Value::Int(now)]).await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == autodebit_eventstore::BackendKind::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let rows = tx
        .query(
            &format!("SELECT refund_id, checks FROM charger_refunds WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2{lock}"),
            &[Value::Int(now), Value::Int(CLAIM)],
        )
        .await?;
    let claimed: Vec<(String, i64)> =
        rows.iter().filter_map(|r| Some((r.text(0)?.to_string(), r.i64(1).unwrap_or(0)))).collect();
    let ids: Vec<&str> = claimed.iter().map(|(id, _)| id.as_str()).collect();
    let each = tx.kind().json_rows(1);
    tx.execute(
        &format!("UPDATE charger_refunds SET due_ms = $2 WHERE refund_id IN (SELECT value->>0 FROM {each})"),
        &[Value::from(keys_json(&ids)), Value::Int(now + LEASE.as_millis() as i64)],
    )
    .await?;
    tx.commit().await?;
    let work = claimed.iter().map(|(id, checks)| carry_out(platform, providers, id, *checks));
    for r in futures::future::join_all(work).await {
        if let Err(e) = r {
            tracing::warn!(error = format!("{e:#}"), "a refund will be tried again");
        }
    }
    Ok(claimed.len())
}

/// Sends one refund and records its outcome.
async fn carry_out(platform: &Platform, providers: &Providers, refund_id: &str, checks: i64) -> anyhow::Result<()> {
    let charge = charge_of(refund_id).ok_or_else(|| anyhow::anyhow!("{refund_id} names no charge"))?;
    let (state, _) = load(&platform.store, charge).await?;
    let c = state.as_ref().ok_or_else(|| anyhow::anyhow!("refund {refund_id}: its charge does not exist"))?;
    let Some(r) = c.refund(refund_id).filter(|r| r.status == RefundStatus::Requested) else {
        // Ended already (recorded by an earlier pass that died before dropping the row).
        return finish(platform, refund_id, None).await.map(|_| ());
    };
    let request = RefundRequest {
        merchant_id: c.merchant_id.clone(),
        charge_id: c.charge_id,
        out_trade_no: c.out_trade_no.clone().unwrap_or_default(),
        transaction_id: c.provider_transaction_id.clone().unwrap_or_default(),
        out_refund_no: refund_id.to_string(),
        charge_amount: c.amount,
        refund_amount: r.amount,
        reason: r.reason.clone(),
    };
    let outcome = providers.for_merchant(c.merchant_id.as_str()).refund(&request).await;
    let reason = match &outcome {
        RefundOutcome::Unknown { reason } => reason.clone(),
        _ => String::new(),
    };
    let command = match outcome_command(refund_id, outcome) {
        Some(command) => command,
        None => {
            tracing::info!(refund_id, reason, "refund outcome not known yet; will ask again");
            let mut tx = platform.store.begin().await?;
            tx.execute(
                "UPDATE charger_refunds SET due_ms = $2, checks = checks + 1 WHERE refund_id = $1",
                &[Value::from(refund_id), Value::Int(unix_ms() + gap(checks).as_millis() as i64)],
            )
            .await?;
            tx.commit().await?;
            return Ok(());
        }
    };
    record(platform, charge, refund_id, command).await
}

/// What a provider's refund notice (or answer) says of a refund: its outcome command, or
/// `None` while it is still processing.
pub fn outcome_command(refund_id: &str, outcome: RefundOutcome) -> Option<ChargeCommand> {
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
/// recorded and changes nothing) and drops its work row.
pub async fn record(
    platform: &Platform,
    charge: ChargeId,
    refund_id: &str,
    command: ChargeCommand,
) -> anyhow::Result<()> {
    // Decided on the charge as it is now: other refunds may move its stream on meanwhile, and
    // then it is decided again (the provider's answer is kept).
    let cause = Cause::request(format!("{refund_id}/outcome"));
    for _ in 0..5 {
        let (state, version) = load(&platform.store, charge).await?;
        let recorded = match append(&state, version, command.clone(), &cause, platform.clock.now()) {
            Ok(a) => Some(a),
            Err(charge::ChargeError::RefundNotPending(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if finish(platform, refund_id, recorded).await? {
            return Ok(());
        }
    }
    anyhow::bail!("refund {refund_id}: its charge kept changing while the outcome was recorded")
}

/// Appends a refund's outcome (if any) and drops its row, in one transaction; `false` when the
/// charge moved on since it was read (nothing kept).
async fn finish(platform: &Platform, refund_id: &str, outcome: Option<StreamAppend>) -> anyhow::Result<bool> {
    let mut tx = platform.store.begin().await?;
    if let Some(append) = &outcome {
        let appended = match tx.append_each(std::slice::from_ref(append)).await {
            Err(e) if e.is_conflict() => return Ok(false),
            other => other?,
        };
        match appended.first() {
            Some(Err(e)) if e.is_conflict() => return Ok(false),
            Some(Err(e)) => anyhow::bail!("refund {refund_id}: {e}"),
            _ => {}
        }
        let name = if append.events.iter().any(|e| e.event_type == "RefundSucceeded") { "succeeded" } else { "failed" };
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::REFUNDS, &[("outcome", name)], 1);
    }
    tx.execute("DELETE FROM charger_refunds WHERE refund_id = $1", &[Value::from(refund_id)]).await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::ContractId;

    #[test]
    fn a_refund_id_names_its_charge_and_fits_out_refund_no() {
        let charge = ChargeId::for_period(ContractId::generate(), 2);
        let id = refund_id(charge, "refund-1");
        assert_eq!(id, refund_id(charge, "refund-1"));
        assert_ne!(id, refund_id(charge, "refund-2"));
        assert!(id.len() <= 64, "{id}");
        assert_eq!(charge_of(&id), Some(charge));
        assert_eq!(charge_of("rf_nonsense"), None);
    }
}
