//! Webhook endpoints in the log: one stream per endpoint, `webhook-endpoint-{id}`.
use super::from_millis;
use crate::repository::Stored;
use autodebit_domain::webhook::{Endpoint, EndpointEvent};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

impl Stored for Endpoint {
    fn to_pb(before: &Endpoint, e: &EndpointEvent) -> Option<pb::Event> {
        let (id, merchant) = (before.endpoint_id.clone(), before.merchant_id.clone());
        Some(pb::Event {
            kind: Some(match e {
                EndpointEvent::Created { endpoint_id, merchant_id, url, event_types, description, at } => {
                    EventKind::WebhookEndpointCreated(pb::WebhookEndpointCreated {
                        endpoint_id: endpoint_id.clone(),
                        merchant_id: merchant_id.clone(),
                        url: url.clone(),
                        event_types: event_types.clone(),
                        description: description.clone(),
                        at_ms: at.timestamp_millis(),
                    })
                }
                EndpointEvent::Updated { url, event_types, description, enabled, at } => {
                    EventKind::WebhookEndpointUpdated(pb::WebhookEndpointUpdated {
                        endpoint_id: id,
                        merchant_id: merchant,
                        url: url.clone(),
                        event_types: event_types.clone(),
                        description: description.clone(),
                        enabled: *enabled,
                        at_ms: at.timestamp_millis(),
                    })
                }
                EndpointEvent::Deleted { at } => EventKind::WebhookEndpointDeleted(pb::WebhookEndpointDeleted {
                    endpoint_id: id,
                    merchant_id: merchant,
                    at_ms: at.timestamp_millis(),
                }),
                EndpointEvent::SecretRotated { generation, at } => {
                    EventKind::WebhookSecretRotated(pb::WebhookSecretRotated {
                        endpoint_id: id,
                        merchant_id: merchant,
                        secret_generation: *generation,
                        at_ms: at.timestamp_millis(),
                    })
                }
                EndpointEvent::Disabled { reason, failing_since, at } => {
                    EventKind::WebhookEndpointDisabled(pb::WebhookEndpointDisabled {
                        endpoint_id: id,
                        merchant_id: merchant,
                        reason: reason.clone(),
                        failing_since_ms: failing_since.timestamp_millis(),
                        at_ms: at.timestamp_millis(),
                    })
                }
            }),
        })
    }

    fn from_pb(kind: &EventKind) -> Option<EndpointEvent> {
        Some(match kind {
            EventKind::WebhookEndpointCreated(c) => EndpointEvent::Created {
                endpoint_id: c.endpoint_id.clone(),
                merchant_id: c.merchant_id.clone(),
                url: c.url.clone(),
                event_types: c.event_types.clone(),
                description: c.description.clone(),
                at: from_millis(c.at_ms),
            },
            EventKind::WebhookEndpointUpdated(u) => EndpointEvent::Updated {
                url: u.url.clone(),
                event_types: u.event_types.clone(),
                description: u.description.clone(),
                enabled: u.enabled,
                at: from_millis(u.at_ms),
            },
            EventKind::WebhookEndpointDeleted(d) => EndpointEvent::Deleted { at: from_millis(d.at_ms) },
            EventKind::WebhookSecretRotated(r) => {
                EndpointEvent::SecretRotated { generation: r.secret_generation, at: from_millis(r.at_ms) }
            }
            EventKind::WebhookEndpointDisabled(d) => EndpointEvent::Disabled {
                reason: d.reason.clone(),
                failing_since: from_millis(d.failing_since_ms),
                at: from_millis(d.at_ms),
            },
            _ => return None,
        })
    }
}
