//! A small value type so services write their own tables with one SQL text on both backends.

/// A parameter or column value. Service tables use BIGINT, TEXT and BYTEA/BLOB only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A NULL; on PostgreSQL it is typed as TEXT.
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn get(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    pub fn i64(&self, i: usize) -> Option<i64> {
        match self.get(i) {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn text(&self, i: usize) -> Option<&str> {
        match self.get(i) {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }

    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        match self.get(i) {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }
}
