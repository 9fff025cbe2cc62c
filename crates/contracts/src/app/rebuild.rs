//! The contracts service's tables from the log alone, for a database whose log was imported
//! (`autodebit log import`): every merchant's, plan's and contract's stream, folded, through
//! the hooks that keep the tables in step when commands run — a contract's row gets its
//! status, zombie flag and expiry warning (`expiry_warned_at_ms`, from `ContractExpiring`) from
//! its events, so the clean-up job warns none twice. Signing sessions are read from their
//! streams (a `VerificationCodeIssued` among them folds like any step) and need no table rows
//! to answer; no row is written for a replayed session, so an SMS code issued before the
//! import is not checked after it (sessions last minutes: the payer opens a new one).
use super::contracts::ContractsTable;
use super::merchants::MerchantTables;
use super::plans::PlansTable;
use crate::store;
use autodebit_domain::contract::Contract;
use autodebit_domain::merchant::Merchant;
use autodebit_domain::plan::Plan;
use autodebit_eventstore::EventStore;
use autodebit_runtime::repository;

/// Writes the tables from the log; returns how many streams it wrote them for.
pub async fn rebuild_tables(store: &EventStore) -> anyhow::Result<usize> {
    store.migrate(&store::MIGRATIONS).await?;
    let streams = repository::streams_with_prefixes(store, &["merchant-", "plan-", "contract-"]).await?;
    let mut tx = store.begin().await?;
    let n = streams.len();
    for (stream, records) in streams {
        if stream.starts_with("merchant-") {
            repository::replay_in::<Merchant, _>(&mut tx, records, &MerchantTables).await?;
        } else if stream.starts_with("plan-") {
            repository::replay_in::<Plan, _>(&mut tx, records, &PlansTable).await?;
        } else {
            repository::replay_in::<Contract, _>(&mut tx, records, &ContractsTable).await?;
        }
    }
    tx.commit().await?;
    Ok(n)
}
