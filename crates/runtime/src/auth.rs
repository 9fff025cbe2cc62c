//! Who is calling: a merchant (by API key) or an operator (by the operator key). The contracts
//! service issues keys; every service that takes merchant calls keeps its own copy of the key
//! table (`{service}_api_keys`), following `ApiKeyIssued` and `ApiKeyRevoked`.
use crate::grpc::store_error;
use autodebit_domain::MerchantId;
use autodebit_eventstore::{EventStore, Value};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Merchant(MerchantId),
}

impl Principal {
    /// Merchants see only their own data; the operator sees everything.
    pub fn may_see(&self, merchant: &MerchantId) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Merchant(m) => m == merchant,
        }
    }

    /// The merchant a question names in `merchant_id`, as this caller may ask it: a merchant
    /// its own (empty or its id; another's is refused, saying nothing of it), the operator the
    /// one it names (`None` for all). The refusal is the problem with `merchant_id`.
    pub fn scope(&self, merchant_id: &str) -> Result<Option<String>, &'static str> {
        match self {
            Principal::Operator => Ok((!merchant_id.is_empty()).then(|| merchant_id.to_string())),
            Principal::Merchant(m) if merchant_id.is_empty() || merchant_id == m.as_str() => Ok(Some(m.to_string())),
            Principal::Merchant(_) => Err("a merchant's key answers for that merchant only: leave it empty"),
        }
    }

    pub fn merchant(&self) -> Result<&MerchantId, Status> {
        match self {
            Principal::Merchant(m) => Ok(m),
            Principal::Operator => Err(Status::permission_denied("this call is made with a merchant's API key")),
        }
    }
}

/// A fresh API key: (key id, the secret string to hand out once, the hash to keep).
pub fn new_api_key() -> (String, String, String) {
    let key_id = format!("key_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let token = format!("adk_{key_id}_{secret}");
    (key_id, token.clone(), sha256_hex(&token))
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[derive(Clone)]
pub struct Authenticator {
    store: EventStore,
    /// SHA-256 of the operator key.
    operator_key_sha256: String,
    /// The table of merchant keys this service reads (`key_id`, `merchant_id`, `secret_sha256`,
    /// `revoked`).
    table: &'static str,
}

/// Keeps a key table in step with one key event; other events are ignored.
pub async fn follow_key_event(
    tx: &mut autodebit_eventstore::Tx,
    table: &str,
    kind: &autodebit_proto::EventKind,
) -> anyhow::Result<()> {
    use autodebit_proto::EventKind;
    match kind {
        EventKind::ApiKeyIssued(k) => {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (key_id, merchant_id, secret_sha256, revoked) VALUES ($1, $2, $3, 0)
                     ON CONFLICT (key_id) DO NOTHING"
                ),
                &[Value::from(&k.key_id), Value::from(&k.merchant_id), Value::from(&k.secret_sha256)],
            )
            .await?;
        }
        EventKind::ApiKeyRevoked(k) => {
            tx.execute(&format!("UPDATE {table} SET revoked = 1 WHERE key_id = $1"), &[Value::from(&k.key_id)]).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Keeps one service's key table in step with the merchants' keys.
pub struct KeyFollower {
    /// The follower's name (its checkpoint), e.g. `charger.keys`.
    pub name: &'static str,
    pub table: &'static str,
}

impl crate::Processor for KeyFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        self.name
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["ApiKeyIssued", "ApiKeyRevoked"]
    }

    async fn prepare(&self, _: &[crate::Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut autodebit_eventstore::Tx, events: &[crate::Decoded], _: ()) -> anyhow::Result<()> {
        for d in events {
            follow_key_event(tx, self.table, &d.kind).await?;
        }
        Ok(())
    }
}

impl Authenticator {
    pub fn new(store: EventStore, operator_key: &str, table: &'static str) -> Self {
        // No operator key: no token can pass as the operator (an empty one would hash to it).
        let operator_key_sha256 = if operator_key.is_empty() { String::new() } else { sha256_hex(operator_key) };
        Authenticator { store, operator_key_sha256, table }
    }

    /// The caller named by `authorization: Bearer …`; `UNAUTHENTICATED` when there is none or
    /// it is unknown or revoked.
    pub async fn principal(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        let header = headers
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("authorization: send `Bearer <API key>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <API key>`"))?;
        self.of_token(token).await.map(|(p, _)| p)
    }

    /// The caller a key names, and the key's id (`operator` for the operator key).
    pub async fn of_token(&self, token: &str) -> Result<(Principal, String), Status> {
        let hash = sha256_hex(token);
        if !self.operator_key_sha256.is_empty() && same(&hash, &self.operator_key_sha256) {
            return Ok((Principal::Operator, OPERATOR_KEY_ID.to_string()));
        }
        let key_id = token
            .strip_prefix("adk_")
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(id, _)| id)
            .ok_or_else(|| Status::unauthenticated("authorization: not an autodebit API key"))?;
        let (principal, secret_sha256, revoked) = self.key(key_id).await?;
        if !same(&secret_sha256, &hash) {
            return Err(Status::unauthenticated("authorization: unknown API key"));
        }
        if revoked {
            return Err(Status::unauthenticated("authorization: this API key was revoked"));
        }
        Ok((principal, key_id.to_string()))
    }

    /// A merchant key's owner, stored hash and whether it was revoked; unknown keys are refused.
    async fn key(&self, key_id: &str) -> Result<(Principal, String, bool), Status> {
        let rows = self
            .store
            .query(
                &format!("SELECT merchant_id, secret_sha256, revoked FROM {} WHERE key_id = $1", self.table),
                &[Value::from(key_id)],
            )
            .await
            .map_err(store_error)?;
        let row = rows.first().ok_or_else(|| Status::unauthenticated("authorization: unknown API key"))?;
        let merchant = MerchantId::parse(row.text(0).unwrap_or_default()).map_err(crate::grpc::internal)?;
        Ok((Principal::Merchant(merchant), row.text(1).unwrap_or_default().to_string(), row.i64(2).unwrap_or(1) != 0))
    }

    /// A browser session for the holder of `token`, valid until `expires_ms`: the cookie value
    /// `key_id.expires_ms.mac`, the MAC keyed by the key's stored hash. Nothing is kept on the
    /// server, so any replica accepts it; revoking the key ends its sessions.
    pub async fn open_session(&self, token: &str, expires_ms: i64) -> Result<(Principal, String), Status> {
        let (principal, key_id) = self.of_token(token).await?;
        let secret = if key_id == OPERATOR_KEY_ID { self.operator_key_sha256.clone() } else { sha256_hex(token) };
        let mac = session_mac(&secret, &key_id, expires_ms);
        Ok((principal, format!("{key_id}.{expires_ms}.{mac}")))
    }

    /// The caller of a session cookie made by [`Self::open_session`], if it is still valid at
    /// `now_ms` and its key is neither unknown nor revoked.
    pub async fn session(&self, cookie: &str, now_ms: i64) -> Result<Principal, Status> {
        let refused = || Status::unauthenticated("session: sign in again");
        let mut parts = cookie.splitn(3, '.');
        let (Some(key_id), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(refused());
        };
        let expires_ms: i64 = expires.parse().map_err(|_| refused())?;
        if expires_ms <= now_ms {
            return Err(Status::unauthenticated("session: expired; sign in again"));
        }
        let (principal, secret, revoked) = if key_id == OPERATOR_KEY_ID && !self.operator_key_sha256.is_empty() {
            (Principal::Operator, self.operator_key_sha256.clone(), false)
        } else {
            self.key(key_id).await.map_err(|_| refused())?
        };
        if !same(&session_mac(&secret, key_id, expires_ms), mac) || revoked {
            return Err(refused());
        }
        Ok(principal)
    }
}

/// The key id a session of the operator key carries.
const OPERATOR_KEY_ID: &str = "operator";

fn session_mac(secret: &str, key_id: &str, expires_ms: i64) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("autodebit-session\n{key_id}\n{expires_ms}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

// === who may call what ===

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Anyone, without a key.
    Public,
    /// A merchant, with its API key; the call acts on that merchant's own objects.
    Merchant,
    /// The operator, with the operator key.
    Operator,
    /// A merchant (its own objects) or the operator (everything).
    MerchantOrOperator,
}

/// Every RPC and who may call it. An RPC missing here is refused, whoever calls.
pub const AUDIENCES: &[(&str, Audience)] = &[
    ("autodebit.contracts.v1.MerchantsService/ApplyMerchant", Audience::Public),
    ("autodebit.contracts.v1.MerchantsService/GetMerchant", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.MerchantsService/ListMerchants", Audience::Operator),
    ("autodebit.contracts.v1.MerchantsService/FileMerchantDocument", Audience::Operator),
    ("autodebit.contracts.v1.MerchantsService/ReviewMerchant", Audience::Operator),
    ("autodebit.contracts.v1.MerchantsService/IssueApiKey", Audience::Merchant),
    ("autodebit.contracts.v1.MerchantsService/RevokeApiKey", Audience::Merchant),
    ("autodebit.contracts.v1.PlansService/CreatePlan", Audience::Merchant),
    ("autodebit.contracts.v1.PlansService/GetPlan", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.PlansService/ListPlans", Audience::Merchant),
    ("autodebit.contracts.v1.ContractsService/SignContract", Audience::Operator),
    ("autodebit.contracts.v1.ContractsService/GetContract", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/ListContracts", Audience::Merchant),
    ("autodebit.contracts.v1.ContractsService/ModifyContract", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/SuspendContract", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/ResumeContract", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/TerminateContract", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/CreateSigningSession", Audience::Merchant),
    ("autodebit.contracts.v1.ContractsService/GetSigningSession", Audience::MerchantOrOperator),
    ("autodebit.contracts.v1.ContractsService/ReviewSigningSession", Audience::Operator),
    ("autodebit.scheduler.v1.SchedulerService/GetSchedule", Audience::MerchantOrOperator),
    ("autodebit.scheduler.v1.SchedulerService/GetSchedulerStatus", Audience::Operator),
    ("autodebit.scheduler.v1.SchedulerService/RecordUsage", Audience::Merchant),
    ("autodebit.scheduler.v1.SchedulerService/TriggerCharge", Audience::Merchant),
    ("autodebit.scheduler.v1.RiskService/ListHeldCharges", Audience::MerchantOrOperator),
    ("autodebit.scheduler.v1.RiskService/ReviewHeldCharge", Audience::Operator),
    ("autodebit.scheduler.v1.RiskService/SetRiskRule", Audience::MerchantOrOperator),
    ("autodebit.scheduler.v1.RiskService/ListRiskRules", Audience::MerchantOrOperator),
    ("autodebit.scheduler.v1.RiskService/ListRiskDecisions", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ChargerService/GetCharge", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ChargerService/RefundCharge", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ChargerService/GetRefund", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/ListSettlementBatches", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/GetSettlementBatch", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/ListFeeRates", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/SetFeeRate", Audience::Operator),
    ("autodebit.charger.v1.SettlementService/SetSplitRules", Audience::Merchant),
    ("autodebit.charger.v1.SettlementService/GetSplitRules", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/ListMerchantReviews", Audience::Operator),
    ("autodebit.charger.v1.SettlementService/ResolveMerchantReview", Audience::Operator),
    ("autodebit.charger.v1.SettlementService/ListReceipts", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.SettlementService/ListProfitSharingOrders", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/FileComplaint", Audience::Operator),
    ("autodebit.charger.v1.ComplaintsService/AnswerComplaint", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/GetComplaint", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/ListComplaints", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/GetComplaintStats", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/GetCreditScore", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ComplaintsService/AdjustCreditScore", Audience::Operator),
    ("autodebit.charger.v1.ComplaintsService/LiftChargingFreeze", Audience::Operator),
    ("autodebit.charger.v1.ReconciliationService/ReconcileStatement", Audience::Operator),
    ("autodebit.charger.v1.ReconciliationService/GetReconciliationReport", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ReconciliationService/ListDiscrepancies", Audience::MerchantOrOperator),
    ("autodebit.charger.v1.ReconciliationService/ResolveDiscrepancy", Audience::Operator),
    ("autodebit.notifier.v1.NotifierService/ListNotices", Audience::MerchantOrOperator),
    ("autodebit.notifier.v1.NotifierService/GetNotifierSettings", Audience::Merchant),
    ("autodebit.notifier.v1.NotifierService/SetNotifierSettings", Audience::Merchant),
    ("autodebit.notifier.v1.NotifierService/ListNoticeTemplates", Audience::Merchant),
    ("autodebit.notifier.v1.NotifierService/SetNoticeTemplate", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/CreateWebhookEndpoint", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/ListWebhookEndpoints", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/UpdateWebhookEndpoint", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/DeleteWebhookEndpoint", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/RotateWebhookSecret", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/ListWebhookDeliveries", Audience::Merchant),
    ("autodebit.notifier.v1.WebhooksService/RedeliverWebhook", Audience::Merchant),
    ("autodebit.analytics.v1.AnalyticsService/GetSummary", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetSigningFunnel", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetChargeStats", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetRetention", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetNoticeChannels", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetRevenue", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/ListHighValuePayers", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetSigningBenchmarks", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/GetRiskOutcomes", Audience::MerchantOrOperator),
    ("autodebit.analytics.v1.AnalyticsService/ExportTable", Audience::MerchantOrOperator),
    ("autodebit.admin.v1.AdminService/AdvanceClock", Audience::Operator),
    ("autodebit.admin.v1.AdminService/GetClock", Audience::Operator),
    // gRPC's own services: health checks and reflection describe only what is public anyway.
    ("grpc.health.v1.Health/Check", Audience::Public),
    ("grpc.health.v1.Health/Watch", Audience::Public),
    ("grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Audience::Public),
    ("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Audience::Public),
];

/// Who may call `method` (`package.Service/Method`), or `None` for a method not in the table.
pub fn audience(method: &str) -> Option<Audience> {
    AUDIENCES.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// The caller of a request that passed the [`AuthLayer`]. A request that did not pass it
/// (none should reach a handler) is `UNAUTHENTICATED`.
pub fn caller<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("authorization: send `Bearer <API key>`"))
}

/// Authenticates every gRPC call before its body is read: the method must be in
/// [`AUDIENCES`], the key must be valid and of that audience. The caller goes into the
/// request's extensions for the handler ([`caller`]).
#[derive(Clone)]
pub struct AuthLayer {
    /// Each served service's authenticator (its own key table), by service name.
    services: std::sync::Arc<std::collections::HashMap<String, Authenticator>>,
    /// For services without a key table of their own (admin): the first served service's.
    fallback: Authenticator,
}

impl AuthLayer {
    pub fn new(store: &EventStore, operator_key: &str, key_tables: &[(&'static str, &'static str)]) -> Self {
        let services: std::collections::HashMap<String, Authenticator> = key_tables
            .iter()
            .map(|(service, table)| (service.to_string(), Authenticator::new(store.clone(), operator_key, table)))
            .collect();
        let fallback = key_tables.first().map(|(_, table)| *table).unwrap_or_default();
        let fallback = Authenticator::new(store.clone(), operator_key, fallback);
        AuthLayer { services: std::sync::Arc::new(services), fallback }
    }

    /// Decides one call from its path and headers: the caller to hand on, or the refusal.
    pub async fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Principal>, Status> {
        let method = path.strip_prefix('/').unwrap_or(path);
        let Some(audience) = audience(method) else {
            return Err(Status::permission_denied(format!("{method}: no caller may call this method")));
        };
        if audience == Audience::Public {
            return Ok(None);
        }
        let service = method.split('/').next().unwrap_or_default();
        let principal = self.services.get(service).unwrap_or(&self.fallback).principal(headers).await?;
        let allowed = match (audience, &principal) {
            (Audience::Merchant, Principal::Merchant(_)) => true,
            (Audience::Operator, Principal::Operator) => true,
            (Audience::MerchantOrOperator, _) => true,
            _ => false,
        };
        if !allowed {
            return Err(Status::permission_denied(match audience {
                Audience::Operator => "this call needs the operator key",
                _ => "this call is made with a merchant's API key",
            }));
        }
        Ok(Some(principal))
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: AuthLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service that was polled ready takes this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match auth.check(req.uri().path(), req.headers()).await {
                Ok(principal) => {
                    if let Some(p) = principal {
                        req.extensions_mut().insert(p);
                    }
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
