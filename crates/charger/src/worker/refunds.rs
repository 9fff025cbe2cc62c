//! The refunds worker. Each refund asked for has a row in `charger_refunds` (written with its
//! `RefundRequested`, `app::refund`); the worker claims due rows, leasing them, and sends each
//! row's refund to the merchant's provider under the refund's own number (`out_refund_no`,
//! which a provider pays back once however often it is sent), so a refund found again after a
//! crash is simply sent again. An answer records `RefundSucceeded` or `RefundFailed`
//! (`app::record_refund_outcome`); no answer (a timeout, a refund still processing) is asked
//! again 1 s, 2 s, … 5 minutes later (`worker::gap`).
use super::next_question_ms;
use crate::Providers;
use crate::app;
use crate::store;
use autodebit_domain::charge::{self, RefundStatus};
use autodebit_provider::{RefundOutcome, RefundRequest};
use autodebit_runtime::Platform;
use std::sync::Arc;
use std::time::Duration;

/// How long a claimed refund is left to its claimer.
const LEASE: Duration = Duration::from_secs(30);
/// How often the worker looks when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// Refunds claimed per pass at most.
const CLAIM: i64 = 100;

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
    let now = store::unix_ms();
    if !store::any_refund_due(&platform.store, now).await? {
        return Ok(0);
    }
    let claimed = store::claim_refunds(&platform.store, now, CLAIM, now + LEASE.as_millis() as i64).await?;
    let work = claimed.iter().map(|r| carry_out(platform, providers, &r.key, r.checks));
    for r in futures::future::join_all(work).await {
        if let Err(e) = r {
            tracing::warn!(error = format!("{e:#}"), "a refund will be tried again");
        }
    }
    Ok(claimed.len())
}

/// Sends one refund and records its outcome.
async fn carry_out(platform: &Platform, providers: &Providers, refund_id: &str, checks: i64) -> anyhow::Result<()> {
    let charge = charge::refunded_charge(refund_id).ok_or_else(|| anyhow::anyhow!("{refund_id} names no charge"))?;
    let state = app::load_charge(platform, charge).await?;
    let c = state.as_ref().ok_or_else(|| anyhow::anyhow!("refund {refund_id}: its charge does not exist"))?;
    let Some(r) = c.refund(refund_id).filter(|r| r.status == RefundStatus::Requested) else {
        // Ended already (recorded by an earlier pass that died before dropping the row).
        let mut tx = platform.store.begin().await?;
        store::drop_refund(&mut tx, refund_id).await?;
        tx.commit().await?;
        return Ok(());
    };
    // A duplicate debit is paid back under its own order (whose amount the refund is).
    let (out_trade_no, transaction_id, charge_amount) = match &r.duplicate {
        Some(d) => (d.out_trade_no.clone(), d.transaction_id.clone(), r.amount),
        None => (
            c.out_trade_no.clone().unwrap_or_default(),
            c.provider_transaction_id.clone().unwrap_or_default(),
            c.amount,
        ),
    };
    let request = RefundRequest {
        merchant_id: c.merchant_id.clone(),
        charge_id: c.charge_id,
        out_trade_no,
        transaction_id,
        out_refund_no: refund_id.to_string(),
        charge_amount,
        refund_amount: r.amount,
        reason: r.reason.clone(),
    };
    let outcome = providers.for_merchant(c.merchant_id.as_str()).refund(&request).await;
    let reason = match &outcome {
        RefundOutcome::Unknown { reason } => reason.clone(),
        _ => String::new(),
    };
    match app::refund_outcome_command(refund_id, outcome) {
        Some(command) => app::record_refund_outcome(platform, charge, refund_id, command).await,
        None => {
            tracing::info!(refund_id, reason, "refund outcome not known yet; will ask again");
            store::ask_refund_again(&platform.store, refund_id, next_question_ms(checks)).await?;
            Ok(())
        }
    }
}
