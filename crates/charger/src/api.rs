//! gRPC handlers of the charger.
use autodebit_domain::ChargeId;
use autodebit_domain::charge::{self, ChargeStatus};
use autodebit_proto::charger::v1::{self as pb, charger_service_server::ChargerService};
use autodebit_runtime::Platform;
use autodebit_runtime::codec;
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct ChargerApi {
    platform: Platform,
}

impl ChargerApi {
    pub fn new(platform: Platform) -> Self {
        ChargerApi { platform }
    }
}

#[tonic::async_trait]
impl ChargerService for ChargerApi {
    async fn get_charge(&self, req: Request<pb::GetChargeRequest>) -> Result<Response<pb::GetChargeResponse>, Status> {
        let id = ChargeId::parse(&req.get_ref().charge_id).map_err(|e| invalid("charge_id", e))?;
        let records = self.platform.store.read_stream(&id.stream(), 0).await.map_err(store_error)?;
        let version = records.last().map(|r| r.version).unwrap_or(0);
        let state = records
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| codec::charge_event_from_pb(&d.kind))
            .fold(None, |s, e| charge::apply(s, &e));
        let c = state.ok_or_else(|| Status::not_found(format!("charge {id} not found")))?;
        Ok(Response::new(pb::GetChargeResponse {
            charge: Some(pb::Charge {
                charge_id: c.charge_id.to_string(),
                contract_id: c.contract_id.to_string(),
                merchant_id: c.merchant_id.to_string(),
                amount: Some(codec::money_to_pb(c.amount)),
                period: c.period,
                state: match c.status {
                    ChargeStatus::Scheduled => pb::ChargeState::Scheduled,
                    ChargeStatus::Succeeded => pb::ChargeState::Succeeded,
                    ChargeStatus::Failed => pb::ChargeState::Failed,
                    ChargeStatus::Rejected => pb::ChargeState::Rejected,
                } as i32,
                provider_transaction_id: c.provider_transaction_id.unwrap_or_default(),
                provider_code: c.code.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                version,
                attempt: c.attempt,
            }),
        }))
    }
}
