//! Merchants: applications, their review, API keys; and what other use cases ask of a
//! merchant (approved or not, its time zone).
use crate::store;
use autodebit_domain::MerchantId;
use autodebit_domain::merchant::{
    self, Application, IndustryPolicy, Merchant, MerchantCommand, MerchantError, MerchantEvent, MerchantState,
    MerchantStatus,
};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::new_api_key;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::grpc::{invalid, store_error};
use autodebit_runtime::repository::{self, Hook, VersionMismatch};
use tonic::Status;

#[derive(Clone)]
pub struct Merchants {
    platform: Platform,
    policy: IndustryPolicy,
}

/// Why a merchant command failed, before it is answered.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Rule(#[from] MerchantError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] VersionMismatch),
}

/// How a refused merchant command is answered.
pub fn to_status(e: MerchantError) -> Status {
    match e {
        MerchantError::Invalid { field, problem } => invalid(field, problem),
        MerchantError::AlreadyApplied => Status::already_exists("this company has already applied"),
        MerchantError::NotFound => Status::not_found("no such merchant"),
        MerchantError::UnknownKey(_) => Status::not_found(e.to_string()),
        MerchantError::WrongStatus(..) | MerchantError::SpecialFilingMissing => {
            Status::failed_precondition(e.to_string())
        }
    }
}

impl Merchants {
    pub fn new(platform: Platform, policy: IndustryPolicy) -> Self {
        Merchants { platform, policy }
    }

    pub async fn load(&self, id: &MerchantId) -> Result<(Option<Merchant>, u64), Status> {
        let l = repository::load::<Merchant>(&self.platform.store, &merchant::stream(id)).await.map_err(store_error)?;
        Ok((l.state, l.version))
    }

    /// Runs `command` through the repository with the merchant and key tables kept in step,
    /// in one transaction. Returns the new state and version.
    pub async fn execute(
        &self,
        id: &MerchantId,
        command: MerchantCommand,
        cause: &Cause,
    ) -> Result<(Merchant, u64), Status> {
        let applying = matches!(command, MerchantCommand::Apply { .. });
        let now = self.platform.clock.now();
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let done = repository::execute_in::<Merchant, _, Failed>(
            &mut tx,
            &merchant::stream(id),
            None,
            command,
            now,
            cause,
            &MerchantTables,
        )
        .await
        .map_err(|e| match e {
            Failed::Rule(r) => to_status(r),
            // Another application of the same company was appended first.
            Failed::Store(e) if e.is_conflict() && applying => to_status(MerchantError::AlreadyApplied),
            Failed::Store(e) => store_error(e),
            Failed::Version(v) => Status::aborted(v.to_string()),
        })?;
        tx.commit().await.map_err(store_error)?;
        let m = done.state.ok_or_else(|| autodebit_runtime::grpc::internal("merchant vanished"))?;
        Ok((m, done.version))
    }

    /// Files an application. A repeated request with its idempotency key gets the original
    /// application.
    pub async fn apply(
        &self,
        application: Application,
        idempotency_key: &str,
        cause: &Cause,
    ) -> Result<(Merchant, u64), Status> {
        merchant::check_application(&application, &self.policy).map_err(to_status)?;
        let id = application.merchant_id.clone();
        let command = MerchantCommand::Apply { application: application.clone(), policy: self.policy.clone() };
        match self.execute(&id, command, cause).await {
            Err(s) if s.code() == tonic::Code::AlreadyExists && !idempotency_key.is_empty() => {
                match self.load(&id).await? {
                    (Some(m), v) if m.application == application => Ok((m, v)),
                    _ => Err(s),
                }
            }
            other => other,
        }
    }

    /// Reviews an application (or suspends, reinstates a merchant). Approval issues the
    /// merchant's first API key, returned as a token ("" for the other actions).
    pub async fn review(
        &self,
        id: &MerchantId,
        command: MerchantCommand,
        cause: &Cause,
    ) -> Result<(Merchant, u64, String), Status> {
        let approving = command == MerchantCommand::Approve;
        let (mut m, mut v) = self.execute(id, command, cause).await?;
        let mut api_key = String::new();
        if approving {
            let (key_id, token, hash) = new_api_key();
            let issue = MerchantCommand::IssueApiKey { key_id, secret_sha256: hash, label: "initial".into() };
            (m, v) = self.execute(id, issue, cause).await?;
            api_key = token;
        }
        Ok((m, v, api_key))
    }

    /// Issues an API key; returns its id and the token (shown once).
    pub async fn issue_api_key(
        &self,
        id: &MerchantId,
        label: String,
        cause: &Cause,
    ) -> Result<(String, String), Status> {
        let (key_id, token, hash) = new_api_key();
        self.execute(id, MerchantCommand::IssueApiKey { key_id: key_id.clone(), secret_sha256: hash, label }, cause)
            .await?;
        Ok((key_id, token))
    }

    /// Merchants after `after` by id, with the status given (`None`: any), and whether more
    /// were found than `limit`.
    pub async fn list(
        &self,
        after: &str,
        status: Option<MerchantStatus>,
        limit: i64,
    ) -> Result<(Vec<(Merchant, u64)>, usize), Status> {
        let status = status.map(store::merchants::status_name).unwrap_or("");
        let ids = store::merchants::list(&self.platform.store, after, status, limit + 1).await.map_err(store_error)?;
        let mut merchants = Vec::new();
        for raw in ids.iter().take(limit as usize) {
            let id = MerchantId::parse(raw).map_err(autodebit_runtime::grpc::internal)?;
            if let (Some(m), v) = self.load(&id).await? {
                merchants.push((m, v));
            }
        }
        Ok((merchants, ids.len()))
    }
}

/// Refuses merchants that are not (or no longer) approved.
pub async fn require_approved(platform: &Platform, merchant: &MerchantId) -> Result<(), Status> {
    let approved = store::merchants::status_name(MerchantStatus::Approved);
    match store::merchants::status(&platform.store, merchant).await.map_err(store_error)?.as_deref() {
        Some(s) if s == approved => Ok(()),
        Some(s) => Err(Status::failed_precondition(format!("merchant {merchant} is {s}, not approved"))),
        None => Err(Status::not_found(format!("merchant {merchant} not found"))),
    }
}

/// `require_approved`, and a credit score at or above the signing floor
/// (`domain::credit::SIGNING_REFUSED_BELOW`): what opening a signing session, confirming one
/// and signing a contract need.
pub async fn require_signing_allowed(platform: &Platform, merchant: &MerchantId) -> Result<(), Status> {
    require_approved(platform, merchant).await?;
    let rows = platform
        .store
        .query("SELECT score FROM contracts_merchant_credit WHERE merchant_id = $1", &[merchant.as_str().into()])
        .await
        .map_err(store_error)?;
    if let Some(score) = rows.first().and_then(|r| r.i64(0))
        && autodebit_domain::credit::standing(score) != autodebit_domain::credit::Standing::Good
    {
        return Err(Status::failed_precondition(format!(
            "merchant {merchant}'s credit score {score} is below {}: no new signings",
            autodebit_domain::credit::SIGNING_REFUSED_BELOW
        )));
    }
    Ok(())
}

/// The time zone a merchant bills in, as it applied with it (Beijing time when unknown).
pub async fn zone(platform: &Platform, merchant: &MerchantId) -> Result<chrono_tz::Tz, Status> {
    let l = repository::load::<Merchant>(&platform.store, &merchant::stream(merchant)).await.map_err(store_error)?;
    let applied = l.state.map(|m| m.application.time_zone).unwrap_or_default();
    Ok(autodebit_domain::cycle::zone(&applied).unwrap_or(chrono_tz::Asia::Shanghai))
}

/// Keeps `contracts_merchants` and `contracts_api_keys` in step with the merchant's events.
pub(crate) struct MerchantTables;

impl Hook<Merchant> for MerchantTables {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, state: &MerchantState, events: &[MerchantEvent]) -> Result<(), StoreError> {
        let Some(m) = state else { return Ok(()) };
        let id = &m.application.merchant_id;
        for e in events {
            match e {
                MerchantEvent::ApiKeyIssued { key_id, secret_sha256, .. } => {
                    store::merchants::insert_api_key(tx, key_id, id, secret_sha256).await?
                }
                MerchantEvent::ApiKeyRevoked { key_id, .. } => store::merchants::revoke_api_key(tx, key_id).await?,
                _ => {}
            }
        }
        store::merchants::upsert(tx, id, m.status, m.applied_at.timestamp_millis()).await
    }
}
