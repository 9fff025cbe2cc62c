//! gRPC handlers of analytics.
use autodebit_eventstore::Value;
use autodebit_proto::analytics::v1::{self as pb, analytics_service_server::AnalyticsService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::grpc::store_error;
use tonic::{Request, Response, Status};

pub struct AnalyticsApi {
    platform: Platform,
}

impl AnalyticsApi {
    pub fn new(platform: Platform) -> Self {
        AnalyticsApi { platform }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    /// The operator's summary covers the platform; a merchant's, only its own contracts,
    /// charges and notices.
    async fn get_summary(
        &self,
        req: Request<pb::GetSummaryRequest>,
    ) -> Result<Response<pb::GetSummaryResponse>, Status> {
        let merchant = match caller(&req)? {
            Principal::Operator => None,
            Principal::Merchant(m) => Some(m.to_string()),
        };
        // `$1` is the merchant, or empty for all of them.
        let whose = "($1 = '' OR merchant_id = $1)";
        let by = [Value::from(merchant.clone().unwrap_or_default())];
        let store = &self.platform.store;
        let mut out = pb::GetSummaryResponse::default();
        let contracts = store
            .query(&format!("SELECT state, COUNT(*) FROM analytics_contracts WHERE {whose} GROUP BY state"), &by)
            .await
            .map_err(store_error)?;
        for r in &contracts {
            let n = r.i64(1).unwrap_or(0).max(0) as u64;
            match r.text(0) {
                Some("active") => out.contracts_active = n,
                Some("terminated") => out.contracts_terminated = n,
                Some("suspended") => out.contracts_suspended = n,
                Some("expired") => out.contracts_expired = n,
                _ => {}
            }
        }
        let charges = store
            .query(&format!("SELECT state, COUNT(*) FROM analytics_charges WHERE {whose} GROUP BY state"), &by)
            .await
            .map_err(store_error)?;
        for r in &charges {
            let n = r.i64(1).unwrap_or(0).max(0) as u64;
            // Every charge was scheduled first, whatever its outcome since.
            out.charges_scheduled += n;
            match r.text(0) {
                Some("succeeded") => out.charges_succeeded = n,
                Some("failed") => out.charges_failed = n,
                Some("rejected") => out.charges_rejected = n,
                _ => {}
            }
        }
        let sums = store
            .query(
                &format!(
                    "SELECT currency, CAST(SUM(amount) AS BIGINT) FROM analytics_charges
                     WHERE state = 'succeeded' AND {whose} GROUP BY currency"
                ),
                &by,
            )
            .await
            .map_err(store_error)?;
        for r in &sums {
            if let (Some(c), Some(v)) = (r.text(0), r.i64(1)) {
                out.succeeded_minor_units_by_currency.insert(c.to_string(), v);
            }
        }
        let counters = match &merchant {
            None => store.query("SELECT name, value FROM analytics_counters", &[]).await,
            Some(_) => {
                store.query("SELECT name, value FROM analytics_merchant_counters WHERE merchant_id = $1", &by).await
            }
        }
        .map_err(store_error)?;
        for r in &counters {
            let n = r.i64(1).unwrap_or(0).max(0) as u64;
            match r.text(0) {
                Some("notices_recorded") => out.notices_recorded = n,
                Some("events_projected") => out.events_projected = n,
                _ => {}
            }
        }
        Ok(Response::new(out))
    }
}
