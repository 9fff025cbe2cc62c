//! SQL built clause by clause, the same text for both backends.
use autodebit_eventstore::Value;

/// A statement built clause by clause, each clause's `?` becoming its parameter's `$n`.
pub struct Query {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Query {
    pub fn new(sql: impl Into<String>) -> Self {
        Query { sql: sql.into(), params: Vec::new() }
    }

    pub fn push(&mut self, clause: &str, v: Value) -> &mut Self {
        self.params.push(v);
        self.sql.push_str(&clause.replace('?', &format!("${}", self.params.len())));
        self
    }

    /// Rows newer than `before` (time, id) first: the keyset of a page that goes on after it,
    /// then the order and the page's size.
    pub fn page(&mut self, time: &str, id: &str, before: Option<(i64, String)>, limit: i64) -> &mut Self {
        if let Some((at, last)) = before {
            self.push(&format!(" AND ({time} < ?"), Value::Int(at));
            self.push(&format!(" OR ({time} = ?"), Value::Int(at));
            self.push(&format!(" AND {id} < ?))"), Value::from(last));
        }
        self.push(&format!(" ORDER BY {time} DESC, {id} DESC LIMIT ?"), Value::Int(limit))
    }
}
