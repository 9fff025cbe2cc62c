//! The profit-sharing worker. Each settled charge with splits has a row in `charger_shares`
//! (written with its batch, `settlement::record_batch`); the worker claims due rows, leasing
//! them, and sends each as one profit-sharing order to the merchant's provider under the
//! order's own number (`out_order_no`, which a provider shares once however often it is sent).
//! An answer records `ProfitSharingEnded` — finished, or failed with the provider's code — and
//! drops the row; no answer is asked again 1 s, 2 s, … 5 minutes later. A merchant whose
//! provider shares nothing has its splits recorded as on the platform's books only.
use super::next_question_ms;
use crate::Providers;
use crate::app;
use crate::store;
use autodebit_domain::ChargeId;
use autodebit_eventstore::{ExpectedVersion, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_provider::{ShareOutcome, ShareRequest};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{Cause, encode};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(500);
const CLAIM: i64 = 100;

/// Starts the profit-sharing worker.
pub fn spawn(platform: Platform, providers: std::sync::Arc<Providers>) {
    tokio::spawn(async move {
        loop {
            match pass(&platform, &providers).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "sharing settled charges failed; retrying");
                    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

async fn pass(platform: &Platform, providers: &Providers) -> anyhow::Result<usize> {
    let now = store::unix_ms();
    if !store::any_share_due(&platform.store, now).await? {
        return Ok(0);
    }
    let claimed = store::claim_shares(&platform.store, now, CLAIM, now + LEASE.as_millis() as i64).await?;
    for c in &claimed {
        if let Err(e) = carry_out(platform, providers, &c.key, c.checks).await {
            tracing::warn!(out_order_no = c.key, error = format!("{e:#}"), "a profit-sharing order will be sent again");
        }
    }
    Ok(claimed.len())
}

async fn carry_out(platform: &Platform, providers: &Providers, out_order_no: &str, checks: i64) -> anyhow::Result<()> {
    let rows = platform
        .store
        .query(
            "SELECT merchant_id, charge_id, batch_id, receivers FROM charger_shares WHERE out_order_no = $1",
            &[Value::from(out_order_no)],
        )
        .await?;
    let Some(row) = rows.first() else { return Ok(()) };
    let text = |i| row.text(i).unwrap_or_default().to_string();
    let (merchant, charge, batch) = (text(0), text(1), text(2));
    let receivers: Vec<(String, i64)> = serde_json::from_str(row.text(3).unwrap_or("[]"))?;
    let provider = providers.for_merchant(&merchant);
    let ended =
        |state: pb::ProfitSharingState, order_id: String, code: String, message: String| pb::ProfitSharingEnded {
            out_order_no: out_order_no.to_string(),
            merchant_id: merchant.clone(),
            charge_id: charge.clone(),
            batch_id: batch.clone(),
            state: state as i32,
            order_id,
            code,
            message,
            ended_at_ms: platform.clock.now_ms(),
        };
    let outcome = if provider.shares_payments(&merchant) {
        let id = ChargeId::parse(&charge).map_err(|e| anyhow::anyhow!("{charge}: {e}"))?;
        let c = app::load_charge(platform, id).await?.ok_or_else(|| anyhow::anyhow!("{charge} does not exist"))?;
        let request = ShareRequest {
            merchant_id: c.merchant_id.clone(),
            charge_id: id,
            transaction_id: c.provider_transaction_id.clone().unwrap_or_default(),
            out_order_no: out_order_no.to_string(),
            receivers,
        };
        match provider.share(&request).await {
            ShareOutcome::Finished { order_id } => {
                ended(pb::ProfitSharingState::Finished, order_id, String::new(), String::new())
            }
            ShareOutcome::Failed { code, message } => {
                ended(pb::ProfitSharingState::Failed, String::new(), code, message)
            }
            ShareOutcome::Pending { reason } => {
                tracing::info!(out_order_no, reason, "profit-sharing order not decided yet; will ask again");
                store::ask_share_again(&platform.store, out_order_no, next_question_ms(checks)).await?;
                return Ok(());
            }
        }
    } else {
        let message =
            format!("{} shares no payments for this merchant: the split is on the platform's books", provider.name());
        ended(pb::ProfitSharingState::BooksOnly, String::new(), String::new(), message)
    };
    let mut tx = platform.store.begin().await?;
    let kind = EventKind::ProfitSharingEnded(outcome);
    let event = encode(pb::Event { kind: Some(kind.clone()) }, &Cause::default(), platform.clock.now_ms());
    match tx.append(&format!("profit-sharing-{out_order_no}"), ExpectedVersion::NoStream, vec![event]).await {
        Ok(_) => apply(&mut tx, &kind).await?,
        // Recorded before (by a pass that died before dropping the row).
        Err(autodebit_eventstore::StoreError::Conflict { .. }) => {
            // The one writer is this transaction's until it goes.
            drop(tx);
            tx = platform.store.begin().await?;
            tx.execute("DELETE FROM charger_shares WHERE out_order_no = $1", &[Value::from(out_order_no)]).await?;
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(())
}

/// Applies `ProfitSharingEnded` to the tables: the order's outcome, its work row gone.
pub async fn apply(tx: &mut Tx, kind: &EventKind) -> anyhow::Result<()> {
    let EventKind::ProfitSharingEnded(e) = kind else { return Ok(()) };
    let state = match pb::ProfitSharingState::try_from(e.state) {
        Ok(pb::ProfitSharingState::Finished) => "finished",
        Ok(pb::ProfitSharingState::Failed) => "failed",
        _ => "books_only",
    };
    tx.execute(
        "UPDATE settlement_share_orders SET state = $2, order_id = $3, code = $4, message = $5, ended_at_ms = $6
         WHERE out_order_no = $1",
        &[
            Value::from(&e.out_order_no),
            Value::from(state),
            Value::from(&e.order_id),
            Value::from(&e.code),
            Value::from(&e.message),
            Value::Int(e.ended_at_ms),
        ],
    )
    .await?;
    tx.execute("DELETE FROM charger_shares WHERE out_order_no = $1", &[Value::from(&e.out_order_no)]).await?;
    Ok(())
}
