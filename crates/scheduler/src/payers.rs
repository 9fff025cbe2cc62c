//! The `scheduler.payers` follower: keeps what the payer's page shows (`api::me`) — each
//! payer's contracts and their states, their charges and refunds, which charges were complained
//! about, and the names of merchants and plans — from the log, apart from the follower that
//! bills, so the page costs billing nothing.
use crate::store::payers::{self, ChargeNews};
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::{Decoded, Processor};

pub struct PayerFollower;

fn money(m: Option<&pb::Money>) -> (i64, &str) {
    m.map_or((0, ""), |m| (m.minor_units, m.currency.as_str()))
}

impl Processor for PayerFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "scheduler.payers"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "MerchantApplied",
            "PlanCreated",
            "ContractSigned",
            "ContractSuspended",
            "ContractResumed",
            "ContractTerminated",
            "ContractExpired",
            "ChargeScheduled",
            "ChargeHeld",
            "ChargeRetryScheduled",
            "ChargeSucceeded",
            "ChargeFailed",
            "ChargeRejected",
            "RefundSucceeded",
            "ComplaintFiled",
        ]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        for d in events {
            follow(tx, &d.kind).await?;
        }
        Ok(())
    }
}

/// A charge's news with no description, detail or hold.
fn charge<'a>(
    id: &'a str,
    contract: &'a str,
    merchant: &'a str,
    payer: &'a str,
    amount: Option<&'a pb::Money>,
    state: &'a str,
    at_ms: i64,
) -> ChargeNews<'a> {
    let (amount, currency) = money(amount);
    ChargeNews {
        charge_id: id,
        contract_id: contract,
        merchant_id: merchant,
        payer_id: payer,
        amount,
        currency,
        description: "",
        state,
        detail: "",
        hold_token: "",
        at_ms,
    }
}

/// A charge event's news: its charge, contract, merchant, payer and amount, with `state` at `at`.
macro_rules! news {
    ($c:expr, $state:expr, $at:expr) => {
        charge(&$c.charge_id, &$c.contract_id, &$c.merchant_id, &$c.payer_id, $c.amount.as_ref(), $state, $at)
    };
}

async fn follow(tx: &mut Tx, kind: &EventKind) -> anyhow::Result<()> {
    use payers::{ACTIVE, EXPIRED, FAILED, HELD, REJECTED, SCHEDULED, SUCCEEDED, SUSPENDED, TERMINATED};
    match kind {
        EventKind::MerchantApplied(m) => payers::name(tx, &m.merchant_id, &m.legal_name).await,
        EventKind::PlanCreated(p) => {
            let terms = p.terms.as_ref().map(prost::Message::encode_to_vec).unwrap_or_default();
            payers::plan(tx, &p.plan_id, terms).await
        }
        EventKind::ContractSigned(s) => {
            payers::contract_signed(tx, &s.contract_id, &s.merchant_id, &s.payer_id, &s.plan_id, s.signed_at_ms).await
        }
        EventKind::ContractSuspended(s) => {
            payers::contract_state(tx, &s.contract_id, SUSPENDED, s.suspended_at_ms).await
        }
        EventKind::ContractResumed(r) => payers::contract_state(tx, &r.contract_id, ACTIVE, r.resumed_at_ms).await,
        EventKind::ContractTerminated(t) => {
            payers::contract_state(tx, &t.contract_id, TERMINATED, t.terminated_at_ms).await
        }
        EventKind::ContractExpired(e) => payers::contract_state(tx, &e.contract_id, EXPIRED, e.expired_at_ms).await,
        EventKind::ChargeScheduled(c) => {
            let news = news!(c, SCHEDULED, c.due_at_ms);
            payers::charge(tx, &ChargeNews { description: &c.description, ..news }).await
        }
        EventKind::ChargeHeld(c) => {
            let news = news!(c, HELD, c.held_at_ms);
            let expires = c.expires_at_ms.to_string();
            payers::charge(
                tx,
                &ChargeNews { description: &c.description, hold_token: &c.token, detail: &expires, ..news },
            )
            .await
        }
        EventKind::ChargeRetryScheduled(c) => {
            let news = news!(c, SCHEDULED, c.scheduled_at_ms);
            payers::charge(tx, &news).await
        }
        EventKind::ChargeSucceeded(c) => {
            let news = news!(c, SUCCEEDED, c.succeeded_at_ms);
            payers::charge(tx, &news).await
        }
        EventKind::ChargeFailed(c) => {
            let news = news!(c, FAILED, c.failed_at_ms);
            payers::charge(tx, &ChargeNews { detail: &c.message, ..news }).await
        }
        EventKind::ChargeRejected(c) => {
            let news = news!(c, REJECTED, c.rejected_at_ms);
            payers::charge(tx, &ChargeNews { detail: &c.rule, ..news }).await
        }
        EventKind::RefundSucceeded(r) => {
            let (amount, currency) = money(r.amount.as_ref());
            payers::refund(
                tx,
                &r.refund_id,
                &r.charge_id,
                &r.merchant_id,
                &r.payer_id,
                amount,
                currency,
                r.succeeded_at_ms,
            )
            .await
        }
        EventKind::ComplaintFiled(c) => payers::complained(tx, &c.charge_id).await,
        _ => Ok(()),
    }
}
