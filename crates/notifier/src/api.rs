//! gRPC handlers of the notifier.
use autodebit_domain::ContractId;
use autodebit_eventstore::Value;
use autodebit_proto::notifier::v1::{self as pb, notifier_service_server::NotifierService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller};
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

#[tonic::async_trait]
impl NotifierService for NotifierApi {
    async fn list_notices(
        &self,
        req: Request<pb::ListNoticesRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        let who = caller(&req)?;
        let id = ContractId::parse(&req.get_ref().contract_id).map_err(|e| invalid("contract_id", e))?;
        // A merchant reads only its own contracts' notices; another's is as good as missing.
        if let Principal::Merchant(m) = &who {
            let owner = self
                .platform
                .store
                .query(
                    "SELECT merchant_id FROM notifier_contracts WHERE contract_id = $1",
                    &[Value::from(id.to_string())],
                )
                .await
                .map_err(store_error)?;
            if owner.first().and_then(|r| r.text(0)) != Some(m.as_str()) {
                return Err(Status::not_found(format!("contract_id: contract {id} not found")));
            }
        }
        let rows = self
            .platform
            .store
            .query(
                "SELECT notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms
                 FROM notifier_notices WHERE contract_id = $1 ORDER BY recorded_at_ms, notice_id",
                &[Value::from(id.to_string())],
            )
            .await
            .map_err(store_error)?;
        let notices = rows
            .iter()
            .map(|r| pb::Notice {
                notice_id: r.text(0).unwrap_or_default().into(),
                kind: r.i64(1).unwrap_or(0) as i32,
                channel: r.text(2).unwrap_or_default().into(),
                recipient: r.text(3).unwrap_or_default().into(),
                contract_id: r.text(4).unwrap_or_default().into(),
                charge_id: r.text(5).unwrap_or_default().into(),
                text: r.text(6).unwrap_or_default().into(),
                recorded_at_ms: r.i64(7).unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListNoticesResponse { notices }))
    }
}
