//! Channel receipts: a channel's report that a notice reached the payer's device, or did not.
//! Recorded as a delivery (`NoticeDeliveryRecorded`, delivered or undelivered) of the notice
//! whose send carried the channel's message id. A receipt that comes before that send is
//! recorded (Tencent reports as soon as it accepts a message) is kept and applied by the
//! sender when it records the send; either side takes it from the table, so it applies once.
use crate::store::{self, EarlyReceipt, NoticeRow};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec::Cause;

/// Records `r` against `n` inside `tx`.
pub async fn apply(tx: &mut Tx, n: &NoticeRow, r: &EarlyReceipt, now: i64) -> Result<(), StoreError> {
    let delivered = r.delivered == 1;
    let outcome = if delivered { pb::DeliveryOutcome::Delivered } else { pb::DeliveryOutcome::Undelivered };
    store::insert_deliveries(
        tx,
        vec![serde_json::json!([n.notice_id, r.channel, outcome as i64, r.provider_message_id, r.detail, r.at_ms])],
    )
    .await?;
    let state = if delivered { "delivered" } else { "undelivered" };
    store::set_notice_states(tx, vec![serde_json::json!([n.notice_id, state, ""])]).await?;
    let receipt = EventKind::NoticeDeliveryRecorded(pb::NoticeDeliveryRecorded {
        notice_id: n.notice_id.clone(),
        merchant_id: n.merchant_id.clone(),
        contract_id: n.contract_id.clone(),
        kind: n.kind as i32,
        channel: r.channel.clone(),
        outcome: outcome as i32,
        provider_message_id: r.provider_message_id.clone(),
        detail: r.detail.clone(),
        attempt: 0,
        at_ms: r.at_ms,
    });
    let cause = Cause::request(format!("receipt/{}/{}", r.channel, r.provider_message_id));
    store::append_to_notice(tx, &n.notice_id, receipt, &cause, now).await?;
    Ok(())
}

/// Records a receipt that has just come in: against its notice if the send is recorded, or
/// kept until it is.
pub async fn receive(store: &autodebit_eventstore::EventStore, r: EarlyReceipt, now: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let kept = match store::notice_of_message_in(&mut tx, &r.channel, &r.provider_message_id).await? {
        Some(n) => {
            apply(&mut tx, &n, &r, now).await?;
            false
        }
        None => {
            store::keep_early_receipt(&mut tx, &r).await?;
            true
        }
    };
    tx.commit().await?;
    if !kept {
        return Ok(());
    }
    // The send may have been recorded meanwhile, without seeing the kept receipt: look again.
    let mut tx = store.begin().await?;
    if store::notice_of_message_in(&mut tx, &r.channel, &r.provider_message_id).await?.is_some() {
        let ids = [r.provider_message_id.clone()];
        for kept in store::take_early_receipts(&mut tx, &r.channel, &ids).await? {
            if let Some(n) = store::notice_of_message_in(&mut tx, &kept.channel, &kept.provider_message_id).await? {
                apply(&mut tx, &n, &kept, now).await?;
            }
        }
    }
    tx.commit().await
}
