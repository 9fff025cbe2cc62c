//! A merchant's webhook endpoint: where the platform tells the merchant what happened, which
//! event types it wants, whether it is on. Its URL is checked by the service (that needs the
//! network); the rules here are the event types, the lifecycle and the secret's generation.
use crate::Aggregate;
use crate::Timestamp;

/// The event types an endpoint may ask for, as they appear in a payload's `type`.
pub const EVENT_TYPES: [&str; 20] = [
    "contract.signed",
    "contract.modified",
    "contract.suspended",
    "contract.resumed",
    "contract.expiring",
    "contract.expired",
    "contract.terminated",
    "charge.scheduled",
    "charge.succeeded",
    "charge.failed",
    "charge.rejected",
    "charge.retry_scheduled",
    "charge.held",
    "charge.hold_released",
    "complaint.filed",
    "complaint.answered",
    "complaint.deadline_missed",
    "refund.succeeded",
    "refund.failed",
    "webhook_endpoint.disabled",
];

/// At most this many endpoints per merchant (deleted ones do not count).
pub const MAX_ENDPOINTS_PER_MERCHANT: usize = 20;
/// The longest description kept.
pub const MAX_DESCRIPTION_CHARS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub merchant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why the platform turned it off ("" when it did not).
    pub disabled_reason: String,
    /// Which secret signs: it changes on every rotation.
    pub generation: u32,
    pub created: bool,
    pub deleted: bool,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub enum EndpointCommand {
    Create {
        endpoint_id: String,
        merchant_id: String,
        url: String,
        event_types: Vec<String>,
        description: String,
    },
    Update {
        url: String,
        event_types: Vec<String>,
        description: String,
        enabled: bool,
    },
    Delete,
    RotateSecret,
    /// Turned off by the platform after failing every delivery since `failing_since`.
    Disable {
        reason: String,
        failing_since: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    Created {
        endpoint_id: String,
        merchant_id: String,
        url: String,
        event_types: Vec<String>,
        description: String,
        at: Timestamp,
    },
    Updated {
        url: String,
        event_types: Vec<String>,
        description: String,
        enabled: bool,
        at: Timestamp,
    },
    Deleted {
        at: Timestamp,
    },
    SecretRotated {
        generation: u32,
        at: Timestamp,
    },
    Disabled {
        reason: String,
        failing_since: Timestamp,
        at: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("event_types: name at least one event type")]
    NoEventTypes,
    #[error("event_types: unknown event type `{0}` (known: {known})", known = EVENT_TYPES.join(", "))]
    UnknownEventType(String),
    #[error("description: at most {MAX_DESCRIPTION_CHARS} characters")]
    DescriptionTooLong,
    #[error("endpoint_id: no such endpoint")]
    NotFound,
    #[error("endpoint_id: the endpoint exists already")]
    Exists,
    #[error("endpoint_id: the endpoint is off already")]
    AlreadyDisabled,
}

/// The event types, checked and without repeats, in the order given.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>, EndpointError> {
    if types.is_empty() {
        return Err(EndpointError::NoEventTypes);
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim();
        if !EVENT_TYPES.contains(&t) {
            return Err(EndpointError::UnknownEventType(t.to_string()));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

fn check_description(d: &str) -> Result<String, EndpointError> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(EndpointError::DescriptionTooLong);
    }
    Ok(d.trim().to_string())
}

impl Endpoint {
    /// Whether a delivery of `event_type` goes to it.
    pub fn wants(&self, event_type: &str) -> bool {
        self.created && !self.deleted && self.enabled && self.event_types.iter().any(|t| t == event_type)
    }
}

impl Aggregate for Endpoint {
    type State = Endpoint;
    type Command = EndpointCommand;
    type Event = EndpointEvent;
    type Error = EndpointError;

    fn decide(s: &Endpoint, command: EndpointCommand, now: Timestamp) -> Result<Vec<EndpointEvent>, EndpointError> {
        if let EndpointCommand::Create { endpoint_id, merchant_id, url, event_types, description } = command {
            if s.created {
                return Err(EndpointError::Exists);
            }
            return Ok(vec![EndpointEvent::Created {
                endpoint_id,
                merchant_id,
                url,
                event_types: check_event_types(&event_types)?,
                description: check_description(&description)?,
                at: now,
            }]);
        }
        if !s.created || s.deleted {
            return Err(EndpointError::NotFound);
        }
        Ok(vec![match command {
            EndpointCommand::Create { .. } => unreachable!("handled above"),
            EndpointCommand::Update { url, event_types, description, enabled } => EndpointEvent::Updated {
                url,
                event_types: check_event_types(&event_types)?,
                description: check_description(&description)?,
                enabled,
                at: now,
            },
            EndpointCommand::Delete => EndpointEvent::Deleted { at: now },
            EndpointCommand::RotateSecret => EndpointEvent::SecretRotated { generation: s.generation + 1, at: now },
            EndpointCommand::Disable { reason, failing_since } => {
                if !s.enabled {
                    return Err(EndpointError::AlreadyDisabled);
                }
                EndpointEvent::Disabled { reason, failing_since, at: now }
            }
        }])
    }

    fn apply(mut s: Endpoint, e: &EndpointEvent) -> Endpoint {
        match e {
            EndpointEvent::Created { endpoint_id, merchant_id, url, event_types, description, at } => {
                s = Endpoint {
                    endpoint_id: endpoint_id.clone(),
                    merchant_id: merchant_id.clone(),
                    url: url.clone(),
                    event_types: event_types.clone(),
                    description: description.clone(),
                    enabled: true,
                    created: true,
                    created_at: Some(*at),
                    ..Endpoint::default()
                };
            }
            EndpointEvent::Updated { url, event_types, description, enabled, .. } => {
                s.url = url.clone();
                s.event_types = event_types.clone();
                s.description = description.clone();
                s.enabled = *enabled;
                if *enabled {
                    s.disabled_reason.clear();
                }
            }
            EndpointEvent::Deleted { .. } => {
                s.deleted = true;
                s.enabled = false;
            }
            EndpointEvent::SecretRotated { generation, .. } => s.generation = *generation,
            EndpointEvent::Disabled { reason, .. } => {
                s.enabled = false;
                s.disabled_reason = reason.clone();
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    fn run(s: &Endpoint, c: EndpointCommand) -> Result<Endpoint, EndpointError> {
        let events = Endpoint::decide(s, c, from_millis(1_000))?;
        Ok(events.iter().fold(s.clone(), |s, e| Endpoint::apply(s, e)))
    }

    fn created() -> Endpoint {
        run(
            &Endpoint::default(),
            EndpointCommand::Create {
                endpoint_id: "we_1".into(),
                merchant_id: "m".into(),
                url: "https://hooks.example/a".into(),
                event_types: vec!["charge.succeeded".into(), "charge.succeeded".into(), "contract.signed".into()],
                description: " mine ".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn an_endpoint_takes_known_event_types_once_each() {
        let e = created();
        assert_eq!(e.event_types, vec!["charge.succeeded", "contract.signed"]);
        assert_eq!(e.description, "mine");
        assert!(e.wants("charge.succeeded") && !e.wants("charge.failed"));
        let bad = EndpointCommand::Update {
            url: e.url.clone(),
            event_types: vec!["charge.exploded".into()],
            description: String::new(),
            enabled: true,
        };
        let err = run(&e, bad).unwrap_err();
        assert!(err.to_string().starts_with("event_types: unknown event type `charge.exploded`"), "{err}");
        let none = EndpointCommand::Update {
            url: e.url.clone(),
            event_types: vec![],
            description: String::new(),
            enabled: true,
        };
        assert_eq!(run(&e, none).unwrap_err(), EndpointError::NoEventTypes);
    }

    #[test]
    fn rotation_disabling_and_deletion() {
        let e = created();
        let e = run(&e, EndpointCommand::RotateSecret).unwrap();
        assert_eq!(e.generation, 1);
        let e = run(&e, EndpointCommand::Disable { reason: "failing".into(), failing_since: from_millis(0) }).unwrap();
        assert!(!e.wants("charge.succeeded"));
        assert_eq!(
            run(&e, EndpointCommand::Disable { reason: "x".into(), failing_since: from_millis(0) }).unwrap_err(),
            EndpointError::AlreadyDisabled
        );
        let on = EndpointCommand::Update {
            url: e.url.clone(),
            event_types: e.event_types.clone(),
            description: String::new(),
            enabled: true,
        };
        let e = run(&e, on).unwrap();
        assert!(e.wants("charge.succeeded") && e.disabled_reason.is_empty());
        let e = run(&e, EndpointCommand::Delete).unwrap();
        assert!(!e.wants("charge.succeeded"));
        assert_eq!(run(&e, EndpointCommand::RotateSecret).unwrap_err(), EndpointError::NotFound);
        assert_eq!(run(&Endpoint::default(), EndpointCommand::Delete).unwrap_err(), EndpointError::NotFound);
    }
}
