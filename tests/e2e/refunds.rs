//! Refunds through the charger's API, on both backends: partial and full, never more than was
//! charged (also when asked for at once), idempotent, and only by the charge's merchant.
use crate::{scenario, support};

use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, GetRefundRequest, RefundChargeRequest, RefundState,
    charger_service_client::ChargerServiceClient,
};
use autodebit_proto::events::v1::{Cycle, Money};
use scenario::{authed, bill_next_period, charge_id, onboard, sign_on};
use support::{Backend, eventually, run_on};
use tonic::Code;

fn refund(charge: &str, fen: i64, key: &str) -> RefundChargeRequest {
    RefundChargeRequest {
        charge_id: charge.into(),
        amount: Some(Money { minor_units: fen, currency: "CNY".into() }),
        reason: "customer asked".into(),
        idempotency_key: key.into(),
    }
}

async fn refunds_are_bounded_idempotent_and_the_merchants_own(backend: Backend) {
    let p = run_on(backend, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2REFUND1").await;
    let other = onboard(&ch, "91330100MA2REFUND2").await;
    let contract = sign_on(&ch, &m, &m.plan_id, "payer-r", 2_000, Cycle::Monthly).await;
    let period = bill_next_period(&ch, &contract).await;
    let id = charge_id(&contract, period);
    // The merchant's client, and the operator's.
    let (mut charger, operator) = (p.charger_as(&m.api_key), p.charger());
    eventually("the charge to succeed", 30, || {
        let mut c = operator.clone();
        let id = id.clone();
        async move {
            let got = c.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
            (got.state == ChargeState::Succeeded as i32).then_some(())
        }
    })
    .await;

    // Bad input names its field; another merchant cannot see the charge.
    let err = charger.refund_charge(refund(&id, 0, "k0")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("amount"), "{}", err.message());
    let err = charger.refund_charge(refund(&id, 100, "")).await.unwrap_err();
    assert!(err.message().starts_with("idempotency_key"), "{}", err.message());
    let err = charger.refund_charge(authed(refund(&id, 100, "k1"), &other.api_key)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = ChargerServiceClient::new(ch.clone()).refund_charge(refund(&id, 100, "k1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no key");

    // A partial refund, asked twice with its key: one refund.
    let first = charger.refund_charge(refund(&id, 500, "k1")).await.unwrap().into_inner();
    assert!(!first.duplicate);
    let again = charger.refund_charge(refund(&id, 500, "k1")).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.refund.as_ref().unwrap().refund_id, first.refund.as_ref().unwrap().refund_id);
    let err = charger.refund_charge(refund(&id, 600, "k1")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());

    // Four refunds of 600 asked for at once against the 1,500 left: two fit.
    let racing = (0..4).map(|i| {
        let mut c = charger.clone();
        let req = refund(&id, 600, &format!("race-{i}"));
        async move { c.refund_charge(req).await }
    });
    let results = futures::future::join_all(racing).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 2, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r.code(), Code::InvalidArgument | Code::Aborted), "{r:?}");
    }
    let err = operator.clone().refund_charge(refund(&id, 301, "k-over")).await.unwrap_err();
    assert!(err.message().contains("left to refund"), "{}", err.message());

    // All of them paid back by the provider: 500 + 600 + 600 of 2,000.
    let charge = eventually("the refunds to succeed", 30, || {
        let mut c = operator.clone();
        let id = id.clone();
        async move {
            let got = c.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
            (got.refunded.as_ref()?.minor_units == 1_700).then_some(got)
        }
    })
    .await;
    assert_eq!(charge.refund_pending.unwrap().minor_units, 0);
    assert_eq!(charge.refunds.len(), 3);
    let r = charger
        .get_refund(GetRefundRequest { refund_id: first.refund.unwrap().refund_id })
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap();
    assert_eq!(r.state, RefundState::Succeeded as i32);
    assert!(!r.provider_refund_id.is_empty());
    // The rest, in full.
    charger.refund_charge(refund(&id, 300, "k-rest")).await.unwrap();
    let err = charger.refund_charge(refund(&id, 1, "k-more")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

both!(refunds_are_bounded_idempotent_and_the_merchants_own);
