//! Deduction plans: a merchant's templates for the contracts its payers sign. A plan is
//! created once (the `Plan` aggregate checks it) and kept in the plan table for reads.
use crate::store;
use autodebit_domain::MerchantId;
use autodebit_domain::plan::{self, Plan, PlanCommand, PlanEvent, PlanRefused, PlanState};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::codec::plan::{TermsError, plan_from_terms, plan_terms_to_pb};
use autodebit_runtime::grpc::{internal, invalid, store_error};
use autodebit_runtime::repository::{self, Hook, VersionMismatch};
use prost::Message;
use tonic::Status;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7b42_9e01_c3d5_4a6f_8b21_f0e4_5d97_3c6a);

/// A plan as the plan table keeps it: its terms with defaults made explicit.
#[derive(Debug, Clone)]
pub struct StoredPlan {
    pub plan_id: String,
    pub merchant_id: MerchantId,
    pub terms: pb::PlanTerms,
    pub created_at_ms: i64,
}

/// A plan's id: derived from the merchant and its idempotency key, else time-ordered.
fn plan_id(merchant: &MerchantId, idempotency_key: &str) -> String {
    let id = if idempotency_key.is_empty() {
        uuid::Uuid::now_v7()
    } else {
        uuid::Uuid::new_v5(&NAMESPACE, format!("{merchant}\0{idempotency_key}").as_bytes())
    };
    format!("pl_{}", id.simple())
}

/// A `terms` field that does not convert, answered as the request field at fault.
fn terms_invalid(e: TermsError) -> Status {
    invalid(&format!("terms.{}", e.field), e.problem)
}

fn stored(row: store::plans::PlanRow) -> Result<StoredPlan, Status> {
    Ok(StoredPlan {
        merchant_id: MerchantId::parse(&row.merchant_id).map_err(internal)?,
        terms: pb::PlanTerms::decode(row.terms.as_slice()).map_err(internal)?,
        plan_id: row.plan_id,
        created_at_ms: row.created_at_ms,
    })
}

/// Reads a plan; `None` when it does not exist.
pub async fn load(platform: &Platform, plan_id: &str) -> Result<Option<(StoredPlan, Plan)>, Status> {
    let Some(row) = store::plans::get(&platform.store, plan_id).await.map_err(store_error)? else { return Ok(None) };
    let s = stored(row)?;
    let plan = plan_from_terms(plan_id, &s.merchant_id, &s.terms).map_err(terms_invalid)?;
    Ok(Some((s, plan)))
}

/// A merchant's plans after `after` by id, and how many rows were read (one more than
/// `limit` when there are more).
pub async fn list(
    platform: &Platform,
    merchant: &MerchantId,
    after: &str,
    limit: i64,
) -> Result<(Vec<StoredPlan>, usize), Status> {
    let rows = store::plans::list(&platform.store, merchant, after, limit + 1).await.map_err(store_error)?;
    let fetched = rows.len();
    let plans = rows.into_iter().take(limit as usize).map(stored).collect::<Result<Vec<_>, _>>()?;
    Ok((plans, fetched))
}

/// Why creating a plan failed, before it is answered.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Rule(#[from] PlanRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Version(#[from] VersionMismatch),
}

/// Creates a plan from `terms` for an approved merchant. The same idempotency key with the same terms answers the
/// original plan; with other terms it is refused.
pub async fn create(
    platform: &Platform,
    merchant: &MerchantId,
    terms: &pb::PlanTerms,
    idempotency_key: &str,
    cause: &Cause,
) -> Result<StoredPlan, Status> {
    let id = plan_id(merchant, idempotency_key);
    let new = plan_from_terms(&id, merchant, terms).map_err(terms_invalid)?;
    let stored_terms = plan_terms_to_pb(&new);
    let now = platform.clock.now_ms();
    let mut tx = platform.store.begin().await.map_err(store_error)?;
    let done = repository::execute_in::<Plan, _, Failed>(
        &mut tx,
        &plan::stream(&id),
        None,
        PlanCommand::Create(new),
        autodebit_domain::clock::from_millis(now),
        cause,
        &PlansTable,
    )
    .await;
    match done {
        Ok(_) => {}
        Err(Failed::Rule(PlanRefused::Invalid(e))) => return Err(invalid(&format!("terms.{}", e.field), e.problem)),
        Err(Failed::Rule(PlanRefused::AlreadyCreated(_))) | Err(Failed::Version(_)) => {
            drop(tx);
            return repeated(platform, &id, &stored_terms).await;
        }
        Err(Failed::Store(e)) if e.is_conflict() => {
            drop(tx);
            return repeated(platform, &id, &stored_terms).await;
        }
        Err(Failed::Store(e)) => return Err(store_error(e)),
    }
    tx.commit().await.map_err(store_error)?;
    Ok(StoredPlan { plan_id: id, merchant_id: merchant.clone(), terms: stored_terms, created_at_ms: now })
}

/// The answer to a repeated idempotency key: the original plan, if the request is the same.
async fn repeated(platform: &Platform, id: &str, terms: &pb::PlanTerms) -> Result<StoredPlan, Status> {
    let (existing, _) = load(platform, id).await?.ok_or_else(|| internal("plan stream without a row"))?;
    if existing.terms == *terms {
        return Ok(existing);
    }
    Err(Status::already_exists("idempotency_key was already used for a different plan"))
}

/// Keeps `contracts_plans` in step with plan events.
pub(crate) struct PlansTable;

impl Hook<Plan> for PlansTable {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, _: &PlanState, events: &[PlanEvent]) -> Result<(), StoreError> {
        for PlanEvent::Created { plan, at } in events {
            let terms = plan_terms_to_pb(plan).encode_to_vec();
            store::plans::insert(tx, &plan.plan_id, &plan.merchant_id, terms, at.timestamp_millis()).await?;
        }
        Ok(())
    }
}
