//! gRPC handlers of deduction plans.
use super::request_cause;
use crate::app::plans::{self, StoredPlan};
use autodebit_proto::contracts::v1::{self as api, plans_service_server::PlansService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::grpc::invalid;
use tonic::{Request, Response, Status};

fn to_api(p: StoredPlan) -> api::Plan {
    api::Plan {
        plan_id: p.plan_id,
        merchant_id: p.merchant_id.to_string(),
        terms: Some(p.terms),
        created_at_ms: p.created_at_ms,
    }
}

pub struct PlansApi {
    platform: Platform,
}

impl PlansApi {
    pub fn new(platform: Platform) -> Self {
        PlansApi { platform }
    }
}

#[tonic::async_trait]
impl PlansService for PlansApi {
    async fn create_plan(
        &self,
        req: Request<api::CreatePlanRequest>,
    ) -> Result<Response<api::CreatePlanResponse>, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        crate::app::merchants::require_approved(&self.platform, &merchant).await?;
        let cause = request_cause(&req);
        let r = req.into_inner();
        let terms = r.terms.ok_or_else(|| invalid("terms", "is required"))?;
        let plan = plans::create(&self.platform, &merchant, &terms, &r.idempotency_key, &cause).await?;
        Ok(Response::new(api::CreatePlanResponse { plan: Some(to_api(plan)) }))
    }

    async fn get_plan(&self, req: Request<api::GetPlanRequest>) -> Result<Response<api::GetPlanResponse>, Status> {
        let principal = caller(&req)?;
        let id = &req.get_ref().plan_id;
        if id.is_empty() {
            return Err(invalid("plan_id", "is required"));
        }
        let not_found = || Status::not_found(format!("plan {id} not found"));
        let (plan, domain) = plans::load(&self.platform, id).await?.ok_or_else(not_found)?;
        if !principal.may_see(&domain.merchant_id) {
            return Err(not_found());
        }
        Ok(Response::new(api::GetPlanResponse { plan: Some(to_api(plan)) }))
    }

    async fn list_plans(
        &self,
        req: Request<api::ListPlansRequest>,
    ) -> Result<Response<api::ListPlansResponse>, Status> {
        let merchant = caller(&req)?.merchant()?.clone();
        let r = req.into_inner();
        let limit = crate::store::page_size(r.page_size);
        let (found, fetched) = plans::list(&self.platform, &merchant, &r.page_token, limit).await?;
        let plans: Vec<api::Plan> = found.into_iter().map(to_api).collect();
        let next_page_token = crate::store::next_page_token(fetched, limit, plans.last().map(|p| p.plan_id.as_str()));
        Ok(Response::new(api::ListPlansResponse { plans, next_page_token }))
    }
}
