//! gRPC handlers of analytics: each asks `app` and maps the answer.
use crate::app::{self, Summary};
use autodebit_proto::analytics::v1::{self as pb, analytics_service_server::AnalyticsService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
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

fn summary_to_pb(s: Summary) -> pb::GetSummaryResponse {
    pb::GetSummaryResponse {
        contracts_active: s.contracts_active,
        contracts_terminated: s.contracts_terminated,
        charges_scheduled: s.charges_scheduled,
        charges_succeeded: s.charges_succeeded,
        charges_failed: s.charges_failed,
        charges_rejected: s.charges_rejected,
        notices_recorded: s.notices_recorded,
        succeeded_minor_units_by_currency: s.succeeded_minor_units_by_currency.into_iter().collect(),
        events_projected: s.events_projected,
        contracts_suspended: s.contracts_suspended,
        contracts_expired: s.contracts_expired,
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
        let who = caller(&req)?;
        let summary = app::summary(&self.platform.store, &who).await.map_err(store_error)?;
        Ok(Response::new(summary_to_pb(summary)))
    }
}
