//! Merchants' webhook endpoints: the commands on them (through the repository, stream
//! `webhook-endpoint-{id}`, kept in `notifier_webhook_endpoints`), their secrets (derived from the
//! platform's webhook key, the endpoint id and the secret's generation; never stored), and the
//! queue of deliveries.
use crate::webhooks::sign::{self, Secret};
use crate::webhooks::url;
use autodebit_domain::webhook::{Endpoint, EndpointCommand, EndpointError, EndpointEvent};
use autodebit_eventstore::{EventStore, StoreError, Tx, Value};
use autodebit_runtime::codec::Cause;
use autodebit_runtime::repository::{self, Hook, VersionMismatch};
use autodebit_runtime::{Platform, auth::Principal};
use std::collections::HashMap;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7d1e_0c55_3b2a_4f6e_9a41_c0de_5e11_d3b7);

/// The `webhook-id` of an event's delivery to an endpoint: the same however often the event
/// is read, so receivers can deduplicate.
pub fn delivery_id(event_id: &str, endpoint_id: &str) -> String {
    let id = uuid::Uuid::new_v5(&NAMESPACE, format!("{event_id}/{endpoint_id}").as_bytes());
    format!("msg_{}", id.simple())
}

pub fn stream(endpoint_id: &str) -> String {
    format!("webhook-endpoint-{endpoint_id}")
}

/// Why a webhook command failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Rule(#[from] EndpointError),
    #[error("url: {0}")]
    Url(String),
    #[error("endpoint_id: no such endpoint")]
    NotFound,
    #[error("delivery_id: no such delivery")]
    NoDelivery,
    #[error("event_types: a merchant has at most {0} endpoints")]
    TooMany(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Conflict(String),
}

impl From<VersionMismatch> for HookError {
    fn from(v: VersionMismatch) -> Self {
        HookError::Conflict(v.to_string())
    }
}

/// The endpoints table, row by row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub endpoint_id: String,
    pub merchant_id: String,
    pub url: String,
    pub event_types: String,
    pub description: String,
    pub enabled: i64,
    pub disabled_reason: String,
    pub generation: i64,
    pub deleted: i64,
    pub created_at_ms: i64,
    pub failing_since_ms: i64,
}

impl EndpointRow {
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled == 1 && self.deleted == 0 && self.event_types.split(',').any(|t| t == event_type)
    }
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, merchant_id, url, event_types, description, enabled, disabled_reason, \
     generation, deleted, created_at_ms, failing_since_ms";

/// The live endpoints of `merchant_ids`, by merchant.
pub async fn endpoints_of(
    tx: &mut Tx,
    merchant_ids: Vec<String>,
) -> Result<HashMap<String, Vec<EndpointRow>>, StoreError> {
    let mut out: HashMap<String, Vec<EndpointRow>> = HashMap::new();
    if merchant_ids.is_empty() {
        return Ok(out);
    }
    let list = serde_json::Value::Array(merchant_ids.iter().map(|m| serde_json::json!([m])).collect()).to_string();
    let rows: Vec<EndpointRow> = tx
        .query_as(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM notifier_webhook_endpoints
                 WHERE deleted = 0 AND merchant_id IN (SELECT value->>0 FROM {})",
                tx.kind().json_rows(1)
            ),
            &[Value::from(list)],
        )
        .await?;
    for r in rows {
        out.entry(r.merchant_id.clone()).or_default().push(r);
    }
    Ok(out)
}

/// One merchant's live endpoints, oldest first, read outside any transaction (a read takes no
/// writer).
pub async fn endpoints_of_merchant(store: &EventStore, merchant_id: &str) -> Result<Vec<EndpointRow>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM notifier_webhook_endpoints WHERE deleted = 0 AND merchant_id = $1
                 ORDER BY created_at_ms, endpoint_id"
            ),
            &[Value::from(merchant_id)],
        )
        .await
}

/// One endpoint's row, deleted or not.
pub async fn endpoint(store: &EventStore, endpoint_id: &str) -> Result<Option<EndpointRow>, StoreError> {
    let rows: Vec<EndpointRow> = store
        .query_as(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM notifier_webhook_endpoints WHERE endpoint_id = $1"),
            &[Value::from(endpoint_id)],
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// Queues deliveries: `[delivery_id, endpoint_id, merchant_id, event_type, payload, now_ms]`. One
/// queued already stays as it is.
pub async fn queue(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_webhook_outbox (delivery_id, endpoint_id, merchant_id, event_type, payload, state,
                                                  attempts, next_at_ms, last_status, last_error, created_at_ms)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, 'pending', 0, CAST(value->>5 AS BIGINT),
                    0, '', CAST(value->>5 AS BIGINT)
             FROM {} WHERE true
             ON CONFLICT (delivery_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// Keeps `notifier_webhook_endpoints` in step with the endpoint's stream.
pub struct EndpointsTable;

impl Hook<Endpoint> for EndpointsTable {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, s: &Endpoint, events: &[EndpointEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let created = s.created_at.map(|t| t.timestamp_millis()).unwrap_or(0);
        // A re-enabled endpoint starts its failure count afresh.
        let reset = events.iter().any(|e| matches!(e, EndpointEvent::Updated { enabled: true, .. }));
        tx.execute(
            "INSERT INTO notifier_webhook_endpoints (endpoint_id, merchant_id, url, event_types, description, enabled,
                                                     disabled_reason, generation, deleted, created_at_ms, failing_since_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)
             ON CONFLICT (endpoint_id) DO UPDATE SET url = excluded.url, event_types = excluded.event_types,
                 description = excluded.description, enabled = excluded.enabled,
                 disabled_reason = excluded.disabled_reason, generation = excluded.generation,
                 deleted = excluded.deleted,
                 failing_since_ms = CASE WHEN $11 = 1 THEN 0 ELSE notifier_webhook_endpoints.failing_since_ms END",
            &[
                Value::from(s.endpoint_id.as_str()),
                Value::from(s.merchant_id.as_str()),
                Value::from(s.url.as_str()),
                Value::from(s.event_types.join(",")),
                Value::from(s.description.as_str()),
                Value::Int(i64::from(s.enabled)),
                Value::from(s.disabled_reason.as_str()),
                Value::Int(i64::from(s.generation)),
                Value::Int(i64::from(s.deleted)),
                Value::Int(created),
                Value::Int(i64::from(reset)),
            ],
        )
        .await?;
        if s.deleted || !s.enabled {
            // What was waiting for an endpoint that is gone or off is not sent.
            let why = if s.deleted { "endpoint deleted" } else { "endpoint disabled" };
            tx.execute(
                "UPDATE notifier_webhook_outbox SET state = 'failed', last_error = $2
                 WHERE endpoint_id = $1 AND state = 'pending'",
                &[Value::from(s.endpoint_id.as_str()), Value::from(why)],
            )
            .await?;
        }
        Ok(())
    }
}

/// Endpoints and their secrets, for the API and the sender.
#[derive(Clone)]
pub struct Webhooks {
    pub platform: Platform,
    /// The key every endpoint's secret derives from.
    key: std::sync::Arc<Vec<u8>>,
    /// Whether `http://` on loopback is accepted (`autodebit run`).
    pub allow_loopback: bool,
}

impl Webhooks {
    pub fn new(platform: Platform, key: Vec<u8>, allow_loopback: bool) -> Self {
        Webhooks { platform, key: std::sync::Arc::new(key), allow_loopback }
    }

    /// The secret an endpoint signs with at `generation`.
    pub fn secret(&self, endpoint_id: &str, generation: u32) -> Secret {
        sign::derive(&self.key, endpoint_id, generation)
    }

    /// Checks a URL the way deliveries will reach it: its form, then every address it resolves
    /// to.
    pub async fn check_url(&self, raw: &str) -> Result<String, HookError> {
        let u = url::check_url(raw, self.allow_loopback).map_err(|e| HookError::Url(e.to_string()))?;
        url::resolve_checked(&u, self.allow_loopback).await.map_err(|e| HookError::Url(e.to_string()))?;
        Ok(u.to_string())
    }

    async fn execute(&self, endpoint_id: &str, command: EndpointCommand, request: &str) -> Result<Endpoint, HookError> {
        let store = &self.platform.store;
        let mut tx = store.begin().await?;
        let now = self.platform.clock.now();
        let done = repository::execute_in::<Endpoint, _, HookError>(
            &mut tx,
            &stream(endpoint_id),
            None,
            command,
            now,
            &Cause::request(request.to_string()),
            &EndpointsTable,
        )
        .await?;
        tx.commit().await?;
        Ok(done.state)
    }

    /// The endpoint as `who` may see it: a merchant only its own.
    pub async fn owned(&self, who: &Principal, endpoint_id: &str) -> Result<EndpointRow, HookError> {
        let row = endpoint(&self.platform.store, endpoint_id).await?.ok_or(HookError::NotFound)?;
        match who {
            Principal::Merchant(m) if m.as_str() != row.merchant_id => Err(HookError::NotFound),
            _ if row.deleted == 1 => Err(HookError::NotFound),
            _ => Ok(row),
        }
    }

    pub async fn create(
        &self,
        merchant_id: &str,
        raw_url: &str,
        event_types: Vec<String>,
        description: String,
    ) -> Result<(Endpoint, Secret), HookError> {
        let live = endpoints_of_merchant(&self.platform.store, merchant_id).await?.len();
        if live >= autodebit_domain::webhook::MAX_ENDPOINTS_PER_MERCHANT {
            return Err(HookError::TooMany(autodebit_domain::webhook::MAX_ENDPOINTS_PER_MERCHANT));
        }
        let url = self.check_url(raw_url).await?;
        let endpoint_id = format!("we_{}", uuid::Uuid::now_v7().simple());
        let command = EndpointCommand::Create {
            endpoint_id: endpoint_id.clone(),
            merchant_id: merchant_id.to_string(),
            url,
            event_types,
            description,
        };
        let e = self.execute(&endpoint_id, command, &format!("webhooks/create/{endpoint_id}")).await?;
        let secret = self.secret(&endpoint_id, e.generation);
        Ok((e, secret))
    }

    pub async fn update(
        &self,
        who: &Principal,
        endpoint_id: &str,
        raw_url: &str,
        event_types: Vec<String>,
        description: String,
        enabled: bool,
    ) -> Result<Endpoint, HookError> {
        let row = self.owned(who, endpoint_id).await?;
        let url =
            if raw_url.is_empty() || raw_url == row.url { row.url.clone() } else { self.check_url(raw_url).await? };
        let event_types =
            if event_types.is_empty() { row.event_types.split(',').map(str::to_string).collect() } else { event_types };
        let command = EndpointCommand::Update { url, event_types, description, enabled };
        self.execute(endpoint_id, command, &format!("webhooks/update/{endpoint_id}")).await
    }

    pub async fn delete(&self, who: &Principal, endpoint_id: &str) -> Result<(), HookError> {
        self.owned(who, endpoint_id).await?;
        self.execute(endpoint_id, EndpointCommand::Delete, &format!("webhooks/delete/{endpoint_id}")).await?;
        Ok(())
    }

    pub async fn rotate(&self, who: &Principal, endpoint_id: &str) -> Result<Secret, HookError> {
        self.owned(who, endpoint_id).await?;
        let e =
            self.execute(endpoint_id, EndpointCommand::RotateSecret, &format!("webhooks/rotate/{endpoint_id}")).await?;
        Ok(self.secret(endpoint_id, e.generation))
    }

    /// Turns off an endpoint that failed every delivery since `failing_since_ms`; the merchant
    /// hears of it through `webhook_endpoint.disabled` on its other endpoints and the log.
    pub async fn disable(&self, endpoint_id: &str, failing_since_ms: i64) -> Result<(), HookError> {
        let reason = "every delivery failed for 3 days".to_string();
        let command =
            EndpointCommand::Disable { reason, failing_since: autodebit_domain::clock::from_millis(failing_since_ms) };
        match self.execute(endpoint_id, command, &format!("webhooks/disable/{endpoint_id}")).await {
            Ok(_) | Err(HookError::Rule(EndpointError::AlreadyDisabled | EndpointError::NotFound)) => {
                tracing::warn!(endpoint_id, "webhook endpoint disabled after failing for 3 days");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
