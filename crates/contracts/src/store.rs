//! The contracts service's own tables, written in the same transaction as its events: they
//! answer lookups (API keys, lists, codes) that streams cannot.
use autodebit_eventstore::Migrations;

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("contracts", 1000..2000);



/// Page sizes: 0 means the default, anything above the maximum is capped.
pub fn page_size(requested: u32) -> i64 {
    match requested {
        0 => 20,
        n => i64::from(n.min(100)),
    }
}

/// The token for the page after this one: the last id shown, when more rows were found than
/// the page holds (each list query fetches one row beyond the page to tell).
pub fn next_page_token(fetched: usize, limit: i64, last_id: Option<&str>) -> String {
    if fetched as i64 > limit { last_id.unwrap_or_default().to_string() } else { String::new() }
}
