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
    /// The table of merchant keys this service reads (columns as in `KEY_TABLE`).
    table: &'static str,
}

/// The columns of a key table: `format!` it with the table's name.
pub fn key_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (
            key_id         TEXT   PRIMARY KEY,
            merchant_id    TEXT   NOT NULL,
            secret_sha256  TEXT   NOT NULL,
            revoked        BIGINT NOT NULL
        )"
    )
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

impl Authenticator {
    pub fn new(store: EventStore, operator_key: &str, table: &'static str) -> Self {
        // No operator key: no token can pass as the operator (an empty one would hash to it).
        let operator_key_sha256 = if operator_key.is_empty() { String::new() } else { sha256_hex(operator_key) };
        Authenticator { store, operator_key_sha256, table }
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
                &format!("SELECT merchant_id, secret_sha256, revoked FROM {} WHERE key_id = $1", self.table),
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
        let merchant = MerchantId::parse(row.text(0).unwrap_or_default()).map_err(crate::grpc::internal)?;
        Ok(Principal::Merchant(merchant))
    }

    pub async fn operator<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.principal(req).await? {
            Principal::Operator => Ok(()),
            Principal::Merchant(_) => Err(Status::permission_denied("this call needs the operator key")),
        }
    }
}
