//! Who is calling: a merchant (by API key) or an operator (by the operator key).
use autodebit_domain::MerchantId;
use autodebit_eventstore::{EventStore, Value};
use autodebit_runtime::grpc::store_error;
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
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
pub struct Authenticator {
    store: EventStore,
    /// SHA-256 of the operator key.
    operator_key_sha256: String,
}

impl Authenticator {
    pub fn new(store: EventStore, operator_key: &str) -> Self {
        Authenticator { store, operator_key_sha256: sha256_hex(operator_key) }
    }

    /// The caller named by `authorization: Bearer …`; `UNAUTHENTICATED` when there is none or
    /// it is unknown or revoked.
    pub async fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("authorization: send `Bearer <API key>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <API key>`"))?;
        let hash = sha256_hex(token);
        if same(&hash, &self.operator_key_sha256) {
            return Ok(Principal::Operator);
        }
        let key_id = token
            .strip_prefix("adk_")
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(id, _)| id)
            .ok_or_else(|| Status::unauthenticated("authorization: not an autodebit API key"))?;
        let rows = self
            .store
            .query(
                "SELECT merchant_id, secret_sha256, revoked FROM contracts_api_keys WHERE key_id = $1",
                &[Value::from(key_id)],
            )
            .await
            .map_err(store_error)?;
        let row = rows.first().ok_or_else(|| Status::unauthenticated("authorization: unknown API key"))?;
        if !same(row.text(1).unwrap_or_default(), &hash) {
            return Err(Status::unauthenticated("authorization: unknown API key"));
        }
        if row.i64(2).unwrap_or(1) != 0 {
            return Err(Status::unauthenticated("authorization: this API key was revoked"));
        }
        let merchant = MerchantId::parse(row.text(0).unwrap_or_default()).map_err(autodebit_runtime::grpc::internal)?;
        Ok(Principal::Merchant(merchant))
    }

    pub async fn operator<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.principal(req).await? {
            Principal::Operator => Ok(()),
            Principal::Merchant(_) => Err(Status::permission_denied("this call needs the operator key")),
        }
    }
}
