//! The contracts service's own tables, written in the same transaction as its events: they
//! answer lookups (API keys, lists, codes, the clean-up's sweeps) that streams cannot. Every
//! SQL statement of the service is here; rows are read by column name.
pub mod contracts;
pub mod merchants;
pub mod plans;
pub mod sessions;

use autodebit_eventstore::Migrations;

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("contracts", 1000..2000);

/// The rows a list call shows when it does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The most rows a list call shows.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Page sizes: 0 means the default, anything above the maximum is capped.
pub fn page_size(requested: u32) -> i64 {
    match requested {
        0 => i64::from(DEFAULT_PAGE_SIZE),
        n => i64::from(n.min(MAX_PAGE_SIZE)),
    }
}

/// The token for the page after this one: the last id shown, when more rows were found than
/// the page holds (each list query fetches one row beyond the page to tell).
pub fn next_page_token(fetched: usize, limit: i64, last_id: Option<&str>) -> String {
    if fetched as i64 > limit { last_id.unwrap_or_default().to_string() } else { String::new() }
}

/// Whether `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &autodebit_eventstore::StoreError) -> bool {
    matches!(
        e,
        autodebit_eventstore::StoreError::Database(autodebit_eventstore::SqlxError::Database(d))
            if d.is_unique_violation()
    )
}
