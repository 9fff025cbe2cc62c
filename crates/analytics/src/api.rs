//! gRPC handlers of analytics: each asks `app` and maps the answer.
use crate::app::{self, BadQuestion, Scope, Summary};
use autodebit_proto::analytics::v1::{self as pb, analytics_service_server::AnalyticsService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct AnalyticsApi {
    platform: Platform,
}

impl AnalyticsApi {
    pub fn new(platform: Platform) -> Self {
        AnalyticsApi { platform }
    }
}

fn bad(b: BadQuestion) -> Status {
    invalid(b.field, b.problem)
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
        contracts_zombie: s.contracts_zombie,
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

    async fn get_signing_funnel(
        &self,
        req: Request<pb::GetSigningFunnelRequest>,
    ) -> Result<Response<pb::GetSigningFunnelResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let group = match pb::FunnelGrouping::try_from(r.group_by) {
            Ok(pb::FunnelGrouping::Unspecified) => "",
            Ok(pb::FunnelGrouping::Plan) => "plan",
            Ok(pb::FunnelGrouping::Channel) => "channel",
            Ok(pb::FunnelGrouping::Merchant) => "merchant",
            Err(_) => return Err(invalid("group_by", format!("unknown grouping {}", r.group_by))),
        };
        let rows = app::funnel(&self.platform.store, &scope, group).await.map_err(store_error)?;
        Ok(Response::new(pb::GetSigningFunnelResponse { rows }))
    }

    async fn get_charge_stats(
        &self,
        req: Request<pb::GetChargeStatsRequest>,
    ) -> Result<Response<pb::GetChargeStatsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let group = match pb::ChargeGrouping::try_from(r.group_by) {
            Ok(pb::ChargeGrouping::Unspecified) => "",
            Ok(pb::ChargeGrouping::Plan) => "plan",
            Ok(pb::ChargeGrouping::FailureCode) => "code",
            Ok(pb::ChargeGrouping::HourOfDay) => "hour",
            Ok(pb::ChargeGrouping::Merchant) => "merchant",
            Err(_) => return Err(invalid("group_by", format!("unknown grouping {}", r.group_by))),
        };
        let rows = app::charge_stats(&self.platform.store, &scope, group).await.map_err(store_error)?;
        Ok(Response::new(pb::GetChargeStatsResponse { rows }))
    }

    async fn get_retention(
        &self,
        req: Request<pb::GetRetentionRequest>,
    ) -> Result<Response<pb::GetRetentionResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let now = self.platform.clock.now_ms();
        let cohorts = app::retention(&self.platform.store, &scope, now).await.map_err(store_error)?;
        Ok(Response::new(pb::GetRetentionResponse { cohorts }))
    }

    async fn get_notice_channels(
        &self,
        req: Request<pb::GetNoticeChannelsRequest>,
    ) -> Result<Response<pb::GetNoticeChannelsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let (rows, unsent) = app::notice_channels(&self.platform.store, &scope).await.map_err(store_error)?;
        Ok(Response::new(pb::GetNoticeChannelsResponse { rows, unsent }))
    }

    async fn get_revenue(
        &self,
        req: Request<pb::GetRevenueRequest>,
    ) -> Result<Response<pb::GetRevenueResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let now = self.platform.clock.now_ms();
        let rows = app::revenue(&self.platform.store, &scope, now).await.map_err(store_error)?;
        Ok(Response::new(pb::GetRevenueResponse { rows }))
    }

    async fn list_high_value_payers(
        &self,
        req: Request<pb::ListHighValuePayersRequest>,
    ) -> Result<Response<pb::ListHighValuePayersResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        if r.limit > 100 {
            return Err(invalid("limit", "at most 100"));
        }
        if !r.currency.is_empty() && (r.currency.len() != 3 || !r.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(invalid("currency", "an ISO 4217 code such as CNY"));
        }
        let payers =
            app::high_value_payers(&self.platform.store, &scope, &r.currency, r.limit).await.map_err(store_error)?;
        Ok(Response::new(pb::ListHighValuePayersResponse { payers }))
    }

    async fn get_signing_benchmarks(
        &self,
        req: Request<pb::GetSigningBenchmarksRequest>,
    ) -> Result<Response<pb::GetSigningBenchmarksResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let (channels, industries) =
            app::signing_benchmarks(&self.platform.store, &scope).await.map_err(store_error)?;
        Ok(Response::new(pb::GetSigningBenchmarksResponse { channels, industries }))
    }
}
