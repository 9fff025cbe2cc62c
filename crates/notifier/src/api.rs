//! gRPC handlers of the notifier: each parses its request, calls `app`, and maps the result.
use crate::app::{self, ReadError};
use crate::store::NoticeRow;
use autodebit_domain::ContractId;
use autodebit_proto::notifier::v1::{self as pb, notifier_service_server::NotifierService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct NotifierApi {
    platform: Platform,
}

impl NotifierApi {
    pub fn new(platform: Platform) -> Self {
        NotifierApi { platform }
    }
}

fn notice_to_pb(n: NoticeRow) -> pb::Notice {
    pb::Notice {
        notice_id: n.notice_id,
        kind: n.kind as i32,
        channel: n.channel,
        recipient: n.recipient,
        contract_id: n.contract_id,
        charge_id: n.charge_id,
        text: n.text,
        recorded_at_ms: n.recorded_at_ms,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl NotifierService for NotifierApi {
    async fn list_notices(
        &self,
        req: Request<pb::ListNoticesRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        let who = caller(&req)?;
        let id = ContractId::parse(&req.get_ref().contract_id).map_err(|e| invalid("contract_id", e))?;
        let notices = app::notices(&self.platform.store, &who, id).await.map_err(|e| match e {
            e @ ReadError::NotFound(_) => Status::not_found(e.to_string()),
            ReadError::Store(e) => store_error(e),
        })?;
        Ok(Response::new(pb::ListNoticesResponse { notices: notices.into_iter().map(notice_to_pb).collect() }))
    }

    async fn get_notifier_settings(
        &self,
        _req: Request<pb::GetNotifierSettingsRequest>,
    ) -> Result<Response<pb::GetNotifierSettingsResponse>, Status> {
        Err(Status::unimplemented("notifier settings arrive in the next release"))
    }

    async fn set_notifier_settings(
        &self,
        _req: Request<pb::SetNotifierSettingsRequest>,
    ) -> Result<Response<pb::SetNotifierSettingsResponse>, Status> {
        Err(Status::unimplemented("notifier settings arrive in the next release"))
    }

    async fn list_notice_templates(
        &self,
        _req: Request<pb::ListNoticeTemplatesRequest>,
    ) -> Result<Response<pb::ListNoticeTemplatesResponse>, Status> {
        Err(Status::unimplemented("notice templates arrive in the next release"))
    }

    async fn set_notice_template(
        &self,
        _req: Request<pb::SetNoticeTemplateRequest>,
    ) -> Result<Response<pb::SetNoticeTemplateResponse>, Status> {
        Err(Status::unimplemented("notice templates arrive in the next release"))
    }
}
