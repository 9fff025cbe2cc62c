//! gRPC handlers of the WebhooksService: a merchant's endpoints and their deliveries. A
//! merchant sees only its own; another's endpoint or delivery is as good as missing.
use crate::app::webhooks::{EndpointRow, HookError, Webhooks};
use crate::worker::webhooks::{DELIVERY_COLUMNS, DeliveryRow};
use autodebit_domain::webhook::{Endpoint, EndpointError};
use autodebit_eventstore::Value;
use autodebit_proto::notifier::v1::{self as pb, webhooks_service_server::WebhooksService};
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct WebhooksApi {
    hooks: Webhooks,
}

impl WebhooksApi {
    pub fn new(hooks: Webhooks) -> Self {
        WebhooksApi { hooks }
    }
}

impl From<HookError> for Status {
    fn from(e: HookError) -> Status {
        match e {
            HookError::Rule(EndpointError::NotFound) | HookError::NotFound => Status::not_found(e.to_string()),
            HookError::NoDelivery => Status::not_found(e.to_string()),
            HookError::Rule(r) => {
                let text = r.to_string();
                let (field, problem) = text.split_once(": ").unwrap_or(("endpoint", text.as_str()));
                invalid(field, problem)
            }
            HookError::Url(u) => invalid("url", u),
            HookError::TooMany(_) => Status::failed_precondition(e.to_string()),
            HookError::Store(s) => store_error(s),
            HookError::Conflict(c) => Status::aborted(c),
        }
    }
}

fn merchant(who: &Principal) -> Result<String, Status> {
    match who {
        Principal::Merchant(m) => Ok(m.to_string()),
        Principal::Operator => {
            Err(Status::permission_denied("webhook endpoints are a merchant's own: call with its key"))
        }
    }
}

fn from_state(e: &Endpoint) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        endpoint_id: e.endpoint_id.clone(),
        url: e.url.clone(),
        event_types: e.event_types.clone(),
        description: e.description.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        created_at_ms: e.created_at.map(|t| t.timestamp_millis()).unwrap_or(0),
    }
}

fn from_row(e: EndpointRow) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        endpoint_id: e.endpoint_id,
        url: e.url,
        event_types: e.event_types.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        description: e.description,
        enabled: e.enabled == 1,
        disabled_reason: e.disabled_reason,
        created_at_ms: e.created_at_ms,
    }
}

fn delivery_to_pb(d: DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        delivery_id: d.delivery_id,
        endpoint_id: d.endpoint_id,
        event_type: d.event_type,
        payload: d.payload,
        state: if d.state == "sending" { "pending".into() } else { d.state },
        attempts: u32::try_from(d.attempts).unwrap_or(u32::MAX),
        last_status: u32::try_from(d.last_status).unwrap_or(0),
        last_error: d.last_error,
        created_at_ms: d.created_at_ms,
        next_attempt_at_ms: d.next_at_ms,
    }
}

#[tonic::async_trait]
impl WebhooksService for WebhooksApi {
    async fn create_webhook_endpoint(
        &self,
        req: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        let r = req.into_inner();
        if r.url.is_empty() {
            return Err(invalid("url", "required"));
        }
        let (e, secret) = self.hooks.create(&m, &r.url, r.event_types, r.description).await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse { endpoint: Some(from_state(&e)), secret: secret.format() }))
    }

    async fn list_webhook_endpoints(
        &self,
        req: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        let rows =
            crate::app::webhooks::endpoints_of_merchant(&self.hooks.platform.store, &m).await.map_err(store_error)?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse { endpoints: rows.into_iter().map(from_row).collect() }))
    }

    async fn update_webhook_endpoint(
        &self,
        req: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::UpdateWebhookEndpointResponse>, Status> {
        let who = caller(&req)?;
        merchant(&who)?;
        let r = req.into_inner();
        let e = self.hooks.update(&who, &r.endpoint_id, &r.url, r.event_types, r.description, r.enabled).await?;
        Ok(Response::new(pb::UpdateWebhookEndpointResponse { endpoint: Some(from_state(&e)) }))
    }

    async fn delete_webhook_endpoint(
        &self,
        req: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let who = caller(&req)?;
        merchant(&who)?;
        self.hooks.delete(&who, &req.get_ref().endpoint_id).await?;
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        req: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let who = caller(&req)?;
        merchant(&who)?;
        let secret = self.hooks.rotate(&who, &req.get_ref().endpoint_id).await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse { secret: secret.format() }))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let who = caller(&req)?;
        merchant(&who)?;
        let r = req.into_inner();
        self.hooks.owned(&who, &r.endpoint_id).await?;
        let limit = match r.limit {
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        let rows: Vec<DeliveryRow> = self
            .hooks
            .platform
            .store
            .query_as(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notifier_webhook_outbox WHERE endpoint_id = $1
                     ORDER BY created_at_ms DESC, delivery_id DESC LIMIT $2"
                ),
                &[Value::from(r.endpoint_id.as_str()), Value::Int(limit)],
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery_to_pb).collect(),
        }))
    }

    async fn redeliver_webhook(
        &self,
        req: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::RedeliverWebhookResponse>, Status> {
        let who = caller(&req)?;
        let m = merchant(&who)?;
        let id = req.into_inner().delivery_id;
        let store = &self.hooks.platform.store;
        let now = self.hooks.platform.clock.now_ms();
        let mut tx = store.begin().await.map_err(store_error)?;
        let rows: Vec<DeliveryRow> = tx
            .query_as(
                &format!(
                    "UPDATE notifier_webhook_outbox SET state = 'pending', next_at_ms = $3
                     WHERE delivery_id = $1 AND merchant_id = $2 AND state <> 'sending'
                       AND endpoint_id IN (SELECT endpoint_id FROM notifier_webhook_endpoints WHERE enabled = 1 AND deleted = 0)
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                &[Value::from(id.as_str()), Value::from(m.as_str()), Value::Int(now)],
            )
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let Some(row) = rows.into_iter().next() else {
            let known: Vec<DeliveryRow> = store
                .query_as(
                    &format!("SELECT {DELIVERY_COLUMNS} FROM notifier_webhook_outbox WHERE delivery_id = $1 AND merchant_id = $2"),
                    &[Value::from(id.as_str()), Value::from(m.as_str())],
                )
                .await
                .map_err(store_error)?;
            return match known.into_iter().next() {
                None => Err(Status::not_found(HookError::NoDelivery.to_string())),
                Some(d) if d.state == "sending" => {
                    Ok(Response::new(pb::RedeliverWebhookResponse { delivery: Some(delivery_to_pb(d)) }))
                }
                Some(_) => Err(Status::failed_precondition("delivery_id: its endpoint is disabled or deleted")),
            };
        };
        Ok(Response::new(pb::RedeliverWebhookResponse { delivery: Some(delivery_to_pb(row)) }))
    }
}
