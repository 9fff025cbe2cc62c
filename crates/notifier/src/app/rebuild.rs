//! The notifier's command-kept tables from the log alone, for a database whose log was imported
//! (`autodebit log import`): each merchant's notice settings and own templates
//! (`notifier-merchant-…`) and each webhook endpoint (`webhook-endpoint-…`), folded through the
//! hooks that keep those tables in step when commands run. Notices, their outbox and webhook
//! deliveries need nothing here: the notifier's follower writes them as it reads the log, and
//! a notice recorded before the import is found by its id and not sent again.
use super::settings::{MerchantNotices, SettingsTables};
use super::webhooks::EndpointsTable;
use crate::store;
use autodebit_domain::webhook::Endpoint;
use autodebit_eventstore::EventStore;
use autodebit_runtime::repository;

/// Writes the tables from the log; returns how many streams it wrote them for.
pub async fn rebuild_tables(store: &EventStore) -> anyhow::Result<usize> {
    store.migrate(&store::MIGRATIONS).await?;
    let streams = repository::streams_with_prefixes(store, &["notifier-merchant-", "webhook-endpoint-"]).await?;
    let mut tx = store.begin().await?;
    let n = streams.len();
    for (stream, records) in streams {
        if stream.starts_with("notifier-merchant-") {
            repository::replay_in::<MerchantNotices, _>(&mut tx, records, &SettingsTables).await?;
        } else {
            repository::replay_in::<Endpoint, _>(&mut tx, records, &EndpointsTable).await?;
        }
    }
    tx.commit().await?;
    Ok(n)
}
