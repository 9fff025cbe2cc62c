//! Rebuilding projections from the log while the live ones serve (`autodebit analytics
//! rebuild [--projection NAME]`):
//!
//! 1. each table of the projections is made again empty as its shadow
//!    (`analytics_shadow_…`, same columns and key, no secondary index yet);
//! 2. the log is read from its beginning up to where the live projections stood when the
//!    rebuild started, and projected into the shadows, a page per transaction;
//! 3. one transaction swaps them in: it takes the live tables from their writers (the live
//!    follower waits), projects into the shadows what the live follower took in since step 2,
//!    so both stand at the same place of the log, drops the live tables, renames the shadows,
//!    and makes the live tables' indexes on them.
//!
//! The live follower's checkpoint is not moved: it goes on from where it was, on the new
//! tables. On PostgreSQL a batch of the live follower that was waiting for the tables fails
//! when they are swapped, and is retried; the analysts' views (`analytics.<name>`) are made
//! again on the swapped-in tables.
use crate::processor::Projector;
use crate::store::{Names, PROJECTIONS, shadow_of};
use autodebit_eventstore::{BackendKind, Checkpoint, EventStore, Tx, Value};

/// Events read from the log per transaction.
const PAGE: i64 = 5_000;

/// The live projector's name: its checkpoint says how far the live tables stand.
const LIVE: &str = crate::processor::NAME;

/// The tables of `projection` (all of them for `None`), or what the known names are.
pub fn tables_of(projection: Option<&str>) -> Result<Vec<&'static str>, String> {
    match projection {
        None => Ok(PROJECTIONS.iter().flat_map(|(_, t)| t.iter().copied()).collect()),
        Some(p) => PROJECTIONS.iter().find(|(name, _)| *name == p).map(|(_, t)| t.to_vec()).ok_or_else(|| {
            let known: Vec<&str> = PROJECTIONS.iter().map(|(n, _)| *n).collect();
            format!("no projection {p:?}; the projections are {}", known.join(", "))
        }),
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events read into the shadows.
    pub events: u64,
    /// Where the swapped-in tables stand.
    pub at: Checkpoint,
}

/// Rebuilds `projection` (every one for `None`); `progress(done, total)` is told of each page.
pub async fn rebuild(
    stores: &crate::Stores,
    projection: Option<&str>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<Rebuilt> {
    let (log, store) = (&stores.log, &stores.tables);
    let tables = tables_of(projection).map_err(anyhow::Error::msg)?;
    let projector = Projector { names: Names::shadows(tables.clone()) };

    let mut tx = store.begin().await?;
    for t in &tables {
        make_shadow(&mut tx, t).await?;
    }
    tx.commit().await?;

    // The log up to where the live tables stand now.
    let total = u64::try_from(log.count().await?).unwrap_or(0);
    let until = store.load_checkpoint(LIVE).await?;
    // Each page is read and decoded while the one before it is written.
    let mut at = Checkpoint::default();
    let mut events = 0u64;
    let mut page = read_page(log.clone(), at, until).await?;
    while let Some((decoded, last, n)) = page {
        let next = tokio::spawn(read_page(log.clone(), last, until));
        let mut tx = store.begin_background().await?;
        projector.project(&mut tx, &decoded).await?;
        tx.commit().await?;
        at = last;
        events += n;
        progress(events, total.max(events));
        page = next.await??;
    }

    // The swap: the shadows caught up with the live tables, then put in their place.
    let mut tx = store.begin().await?;
    if tx.kind() == BackendKind::Postgres {
        let live = tables.join(", ");
        tx.execute_script(&format!("LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")).await?;
    }
    let now = checkpoint_in(&mut tx).await?;
    while let Some((decoded, last, n)) = read_page(log.clone(), at, now).await? {
        projector.project(&mut tx, &decoded).await?;
        at = last;
        events += n;
    }
    for t in &tables {
        swap(&mut tx, t).await?;
    }
    tx.commit().await?;
    progress(events, total.max(events));
    Ok(Rebuilt { events, at })
}

/// The next page of the log after `at` and not past `until`, decoded; where it ends, and how
/// many events it holds. `None` at `until`.
async fn read_page(
    store: EventStore,
    at: Checkpoint,
    until: Checkpoint,
) -> anyhow::Result<Option<(Vec<autodebit_runtime::Decoded>, Checkpoint, u64)>> {
    if at >= until {
        return Ok(None);
    }
    let page: Vec<_> = store.read_all(at, PAGE).await?.into_iter().take_while(|r| r.checkpoint() <= until).collect();
    let Some(last) = page.last().map(|r| r.checkpoint()) else { return Ok(None) };
    let n = page.len() as u64;
    Ok(Some((page.into_iter().filter_map(autodebit_runtime::codec::decode).collect(), last, n)))
}

#[derive(sqlx::FromRow)]
struct Saved {
    transaction_id: i64,
    position: i64,
}

/// The live projector's checkpoint, read in `tx`.
async fn checkpoint_in(tx: &mut Tx) -> anyhow::Result<Checkpoint> {
    let found: Vec<Saved> = tx
        .query_as("SELECT transaction_id, position FROM consumer_checkpoints WHERE consumer = $1", &[Value::from(LIVE)])
        .await?;
    Ok(found
        .first()
        .map(|s| Checkpoint { transaction_id: u64::try_from(s.transaction_id).unwrap_or(0), position: s.position })
        .unwrap_or_default())
}

#[derive(sqlx::FromRow)]
struct Ddl {
    sql: String,
}

/// Makes `table`'s shadow afresh: its columns and primary key, no other index.
async fn make_shadow(tx: &mut Tx, table: &'static str) -> anyhow::Result<()> {
    let shadow = shadow_of(table);
    tx.execute_script(&format!("DROP TABLE IF EXISTS {shadow}")).await?;
    match tx.kind() {
        BackendKind::Sqlite => {
            let found: Vec<Ddl> = tx
                .query_as("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1", &[Value::from(table)])
                .await?;
            let ddl = found.first().ok_or_else(|| anyhow::anyhow!("no table {table}"))?;
            tx.execute_script(&Names::shadows(vec![table]).apply(&ddl.sql)).await?;
        }
        BackendKind::Postgres => {
            let key = primary_key(tx, table).await?.join(", ");
            tx.execute_script(&format!(
                "CREATE TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
                 ALTER TABLE {shadow} ADD CONSTRAINT {shadow}_pkey PRIMARY KEY ({key})"
            ))
            .await?;
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Column {
    name: String,
}

/// The columns of `table`'s primary key, in order (PostgreSQL).
async fn primary_key(tx: &mut Tx, table: &str) -> anyhow::Result<Vec<String>> {
    let found: Vec<Column> = tx
        .query_as(
            "SELECT a.attname AS name FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = CAST($1 AS regclass) AND i.indisprimary
             ORDER BY array_position(i.indkey, a.attnum)",
            &[Value::from(table)],
        )
        .await?;
    Ok(found.into_iter().map(|c| c.name).collect())
}

/// Puts `table`'s shadow in its place, with the live table's indexes.
async fn swap(tx: &mut Tx, table: &str) -> anyhow::Result<()> {
    let shadow = shadow_of(table);
    let indexes: Vec<Ddl> = match tx.kind() {
        BackendKind::Sqlite => {
            tx.query_as(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL",
                &[Value::from(table)],
            )
            .await?
        }
        BackendKind::Postgres => {
            tx.query_as(
                "SELECT indexdef AS sql FROM pg_indexes WHERE tablename = $1 AND indexname <> $2",
                &[Value::from(table), Value::from(format!("{table}_pkey"))],
            )
            .await?
        }
    };
    match tx.kind() {
        BackendKind::Sqlite => {
            tx.execute_script(&format!("DROP TABLE {table}; ALTER TABLE {shadow} RENAME TO {table}")).await?
        }
        // The analysts' view of the table goes with it, and is made again on the new one.
        BackendKind::Postgres => {
            let view = format!("analytics.{}", table.trim_start_matches("analytics_"));
            tx.execute_script(&format!(
                "DROP TABLE {table} CASCADE;
                 ALTER TABLE {shadow} RENAME TO {table};
                 ALTER INDEX {shadow}_pkey RENAME TO {table}_pkey;
                 CREATE VIEW {view} AS SELECT * FROM {table};
                 GRANT SELECT ON {view} TO autodebit_analyst"
            ))
            .await?
        }
    }
    for i in indexes {
        tx.execute_script(&i.sql).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_name_their_tables() {
        assert_eq!(tables_of(Some("charges")).unwrap(), vec!["analytics_charges", "analytics_refunds"]);
        assert_eq!(tables_of(None).unwrap().len(), 12);
        let err = tables_of(Some("nope")).unwrap_err();
        assert!(err.contains("contracts, charges, funnel, notices, counters, settlements, risk"), "{err}");
    }

    #[test]
    fn shadow_names_replace_whole_table_names_only() {
        let names = Names::shadows(vec!["analytics_contracts", "analytics_counters"]);
        assert_eq!(
            names.apply(
                "UPDATE analytics_contracts SET x = 1 FROM analytics_contracts_view, analytics_merchant_counters"
            ),
            "UPDATE analytics_shadow_contracts SET x = 1 FROM analytics_contracts_view, analytics_merchant_counters"
        );
        assert!(names.writes("analytics_counters") && !names.writes("analytics_charges"));
        assert!(Names::default().writes("analytics_charges"));
    }
}
