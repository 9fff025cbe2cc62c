//! gRPC handlers of analytics: each asks `app` and maps the answer.
use crate::app::{self, BadQuestion, Scope, Summary};
use autodebit_proto::analytics::v1::{self as pb, analytics_service_server::AnalyticsService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct AnalyticsApi {
    platform: Platform,
    /// The log (exported as `events`) and the tables.
    stores: crate::Stores,
}

impl AnalyticsApi {
    pub fn new(platform: Platform, stores: crate::Stores) -> Self {
        AnalyticsApi { platform, stores }
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
        merchants_under_review: s.merchants_under_review,
    }
}

/// An export's failure: bad input names its field; the rest as every handler answers it.
fn export_error(e: anyhow::Error) -> Status {
    match e.downcast::<BadQuestion>() {
        Ok(b) => bad(b),
        Err(e) => match e.downcast::<autodebit_eventstore::StoreError>() {
            Ok(s) => store_error(s),
            Err(e) => autodebit_runtime::grpc::internal(e),
        },
    }
}

/// The size of an export's messages.
const EXPORT_CHUNK: usize = 1 << 20;

type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportTableResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    type ExportTableStream = ExportStream;

    /// The file is made whole (as the command line makes it), then sent in 1 MiB messages.
    async fn export_table(&self, req: Request<pb::ExportTableRequest>) -> Result<Response<ExportStream>, Status> {
        use crate::export::{Export, Format, export};
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let format = match pb::ExportFormat::try_from(r.format) {
            Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Parquet) => Format::Parquet,
            Ok(pb::ExportFormat::Csv) => Format::Csv,
            Err(_) => return Err(invalid("format", format!("unknown format {}", r.format))),
        };
        if r.table.is_empty() {
            return Err(invalid("table", "name an analytics table or events"));
        }
        let what = Export {
            name: r.table,
            since: (scope.from_ms > 0).then_some(scope.from_ms),
            until: (scope.until_ms > 0).then_some(scope.until_ms),
            merchant: scope.merchant,
        };
        let mut file = Vec::new();
        let rows = export(&self.stores, &what, format, &mut file).await.map_err(export_error)?;
        let chunks: Vec<Result<pb::ExportTableResponse, Status>> = file
            .chunks(EXPORT_CHUNK)
            .enumerate()
            .map(|(i, c)| Ok(pb::ExportTableResponse { data: c.to_vec(), rows: if i == 0 { rows as u64 } else { 0 } }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

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

    async fn get_risk_outcomes(
        &self,
        req: Request<pb::GetRiskOutcomesRequest>,
    ) -> Result<Response<pb::GetRiskOutcomesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let scope = Scope::of(&who, &r.merchant_id, r.range.as_ref()).map_err(bad)?;
        let (holds, complaints) = app::risk_outcomes(&self.platform.store, &scope).await.map_err(store_error)?;
        Ok(Response::new(pb::GetRiskOutcomesResponse { holds, complaints }))
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
