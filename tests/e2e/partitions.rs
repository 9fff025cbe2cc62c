//! Past one database (`docs/scaling.md`): merchants split across two partitions, each a whole
//! deployment with its own PostgreSQL database, log and followers, run side by side. Each
//! bills its own merchant's contracts at the same time as the other; neither holds, counts or
//! recognises what belongs to the other, so a request must reach its merchant's partition (a
//! key sent to the wrong one is unknown there) and nothing needs to pass between them.
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::analytics::v1::{GetSummaryRequest, analytics_service_client::AnalyticsServiceClient};
use autodebit_proto::contracts::v1::{GetMerchantRequest, merchants_service_client::MerchantsServiceClient};
use autodebit_proto::scheduler::v1::{GetSchedulerStatusRequest, scheduler_service_client::SchedulerServiceClient};
use scenario::{Merchant, OPERATOR_KEY, authed, onboard, sign_request};
use support::{Process, eventually};
use tonic::Code;
use tonic::transport::Channel;

const CONTRACTS: u64 = 60;

/// A partition's billing month: its merchant onboarded, its contracts signed, its clock moved
/// a month on, every charge at its outcome. The merchant.
async fn bill(ch: Channel, credit_code: &str) -> Merchant {
    let m = onboard(&ch, credit_code).await;
    let mut contracts =
        autodebit_proto::contracts::v1::contracts_service_client::ContractsServiceClient::new(ch.clone());
    for i in 0..CONTRACTS {
        let request = authed(sign_request(&m, &format!("payer-{credit_code}-{i}"), 990 + i as i64), OPERATOR_KEY);
        contracts.sign_contract(request).await.unwrap();
    }
    eventually("every schedule", 60, || {
        let mut s = SchedulerServiceClient::new(ch.clone());
        async move {
            let st = s.get_scheduler_status(authed(GetSchedulerStatusRequest {}, OPERATOR_KEY)).await.ok()?;
            (st.into_inner().active_schedules == CONTRACTS).then_some(())
        }
    })
    .await;
    AdminServiceClient::new(ch.clone())
        .advance_clock(authed(AdvanceClockRequest { seconds: 32 * 86_400 }, OPERATOR_KEY))
        .await
        .unwrap();
    eventually("every charge at its outcome", 120, || {
        let mut a = AnalyticsServiceClient::new(ch.clone());
        async move {
            let s = a.get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY)).await.ok()?.into_inner();
            (s.charges_succeeded == CONTRACTS).then_some(())
        }
    })
    .await;
    m
}

#[tokio::test]
async fn two_partitions_bill_their_own_merchants_side_by_side() {
    let urls = [
        autodebit_eventstore::testing::fresh_postgres_url().await,
        autodebit_eventstore::testing::fresh_postgres_url().await,
    ];
    let partitions: Vec<Process> = urls
        .iter()
        .map(|url| {
            Process::start(&[
                "run",
                "--database-url",
                url,
                "--test-clock",
                "--charge-window",
                "00:00-24:00",
                "--decline-basis-points",
                "0",
            ])
        })
        .collect();
    let (a, b) = (partitions[0].channel().await, partitions[1].channel().await);
    // Both billing months at once.
    let (ma, mb) = tokio::join!(bill(a.clone(), "91330100MA2PART0A1"), bill(b.clone(), "91330100MA2PART0B1"));

    for (ch, own, other) in [(&a, &ma, &mb), (&b, &mb, &ma)] {
        // Each counts only its own merchant's contracts and charges.
        let s = AnalyticsServiceClient::new(ch.clone())
            .get_summary(authed(GetSummaryRequest::default(), OPERATOR_KEY))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((s.contracts_active, s.charges_scheduled, s.charges_succeeded), (CONTRACTS, CONTRACTS, CONTRACTS));
        let mut merchants = MerchantsServiceClient::new(ch.clone());
        let found = merchants
            .get_merchant(authed(GetMerchantRequest { merchant_id: own.merchant_id.clone() }, &own.api_key))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.merchant.unwrap().merchant_id, own.merchant_id);
        // The other partition's merchant does not exist here, and its key opens nothing.
        let unknown = merchants
            .get_merchant(authed(GetMerchantRequest { merchant_id: other.merchant_id.clone() }, OPERATOR_KEY))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        let refused = merchants
            .get_merchant(authed(GetMerchantRequest { merchant_id: other.merchant_id.clone() }, &other.api_key))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    // And each log holds its own merchant's events only.
    for (url, own, other) in [(&urls[0], &ma, &mb), (&urls[1], &mb, &ma)] {
        let store = autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(url.as_str()))
            .await
            .unwrap();
        let count = |id: String| {
            let store = store.clone();
            async move {
                let rows = store
                    .query("SELECT COUNT(*) FROM events WHERE stream LIKE $1", &[format!("%{id}%").as_str().into()])
                    .await
                    .unwrap();
                rows[0].i64(0).unwrap()
            }
        };
        assert!(count(own.merchant_id.clone()).await > 0);
        assert_eq!(count(other.merchant_id.clone()).await, 0);
    }
}
