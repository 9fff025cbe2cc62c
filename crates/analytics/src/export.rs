//! Exports: an analytics table, or the decoded log, as CSV or Parquet, for
//! `autodebit analytics export` and `AnalyticsService.ExportTable`.
//!
//! A table's columns are read from the database's own catalogue (`BIGINT` columns are 64-bit
//! integers, the rest text); `events` is the log, one row per event with its payload decoded
//! to JSON (protobuf's JSON mapping). `--since`/`--until` bound a table's time column (the one
//! `docs/analytics.md` names for its range) or an event's recording time.
use crate::app::BadQuestion;
use anyhow::Context;
use autodebit_eventstore::{BackendKind, EventStore, Value};
use std::io::Write;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

/// A column: its name and whether it holds integers.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    int: bool,
}

/// What is exported: its columns and rows.
struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
}

/// The column a table's range applies to, for those that have one.
fn time_column(table: &str) -> Option<&'static str> {
    Some(match table {
        "analytics_contracts" => "signed_at_ms",
        "analytics_charges" => "due_at_ms",
        "analytics_signing_sessions" => "opened_at_ms",
        "analytics_notices" => "recorded_at_ms",
        "analytics_refunds" => "at_ms",
        _ => return None,
    })
}

/// What to export: `events` or an analytics table by its name or short name; the range of
/// its time column; and, for a merchant's export, the merchant whose rows alone it holds.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub name: String,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub merchant: Option<String>,
}

fn bad(field: &'static str, problem: String) -> anyhow::Error {
    anyhow::Error::new(BadQuestion { field, problem })
}

/// Writes the export to `out` in `format`; how many rows. Bad input fails with a
/// [`BadQuestion`] naming the field (`table`, `since`), before anything is written.
pub async fn export(
    stores: &crate::Stores,
    what: &Export,
    format: Format,
    out: impl Write + Send,
) -> anyhow::Result<usize> {
    let table = if what.name == "events" {
        if what.merchant.is_some() {
            return Err(bad(
                "table",
                "events is the whole platform's log, exported by the operator and not by merchant".into(),
            ));
        }
        events(&stores.log, what.since, what.until).await?
    } else {
        table(&stores.tables, what).await?
    };
    let n = table.rows.len();
    match format {
        Format::Csv => write_csv(std::io::BufWriter::new(out), &table)?,
        Format::Parquet => write_parquet(out, &table)?,
    }
    Ok(n)
}

#[derive(sqlx::FromRow)]
struct Catalogued {
    name: String,
    ty: String,
}

async fn table(store: &EventStore, what: &Export) -> anyhow::Result<Table> {
    let (name, since, until) = (what.name.as_str(), what.since, what.until);
    let full = if name.starts_with("analytics_") { name.to_string() } else { format!("analytics_{name}") };
    let known = crate::rebuild::tables_of(None).map_err(anyhow::Error::msg)?;
    if !known.contains(&full.as_str()) {
        return Err(bad("table", format!("no table {name:?}; the tables are events, {}", known.join(", "))));
    }
    let catalogued: Vec<Catalogued> = match store.kind() {
        BackendKind::Sqlite => {
            store
                .query_as(
                    "SELECT name, type AS ty FROM pragma_table_info($1) ORDER BY cid",
                    &[Value::from(full.as_str())],
                )
                .await?
        }
        BackendKind::Postgres => {
            store
                .query_as(
                    "SELECT column_name AS name, data_type AS ty FROM information_schema.columns
                     WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
                    &[Value::from(full.as_str())],
                )
                .await?
        }
    };
    let columns: Vec<Column> = catalogued
        .into_iter()
        .map(|c| Column { int: c.ty.to_ascii_uppercase().contains("INT"), name: c.name })
        .collect();
    let time = time_column(&full);
    if time.is_none() && (since.is_some() || until.is_some()) {
        return Err(bad("since", format!("{full} has no time to bound")));
    }
    let mut sql = format!(
        "SELECT {} FROM {full} WHERE 1 = 1",
        columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let mut params = Vec::new();
    if let Some(t) = time {
        sql.push_str(&format!(" AND {t} >= $1 AND ($2 = 0 OR {t} < $2)"));
        params = vec![Value::Int(since.unwrap_or(0)), Value::Int(until.unwrap_or(0))];
    }
    if let Some(m) = &what.merchant {
        if !columns.iter().any(|c| c.name == "merchant_id") {
            return Err(bad(
                "table",
                format!("{full} holds the whole platform's figures; only the operator exports it"),
            ));
        }
        params.push(Value::from(m.as_str()));
        sql.push_str(&format!(" AND merchant_id = ${}", params.len()));
    }
    sql.push_str(" ORDER BY 1");
    let rows = store.query(&sql, &params).await?.into_iter().map(|r| r.0).collect();
    Ok(Table { columns, rows })
}

/// The log, decoded: position, stream, version, event type, event id, recording time, and the
/// payload as JSON.
async fn events(store: &EventStore, since: Option<i64>, until: Option<i64>) -> anyhow::Result<Table> {
    use prost_reflect::{DescriptorPool, DynamicMessage};
    let pool = DescriptorPool::decode(autodebit_proto::FILE_DESCRIPTOR_SET)?;
    let event = pool.get_message_by_name("autodebit.events.v1.Event").context("the Event message")?;
    let col = |name: &str, int: bool| Column { name: name.into(), int };
    let columns = vec![
        col("position", true),
        col("stream", false),
        col("version", true),
        col("event_type", false),
        col("event_id", false),
        col("recorded_at_ms", true),
        col("payload", false),
    ];
    let (from, to) = (since.unwrap_or(0), until.unwrap_or(i64::MAX));
    let mut rows = Vec::new();
    let mut pages = store.pages(5_000);
    while let Some(page) = pages.next().await? {
        for r in page {
            if r.recorded_at_ms < from || r.recorded_at_ms >= to {
                continue;
            }
            let payload = DynamicMessage::decode(event.clone(), r.payload.as_slice())
                .ok()
                .and_then(|m| serde_json::to_string(&m).ok())
                .unwrap_or_else(|| "null".into());
            rows.push(vec![
                Value::Int(r.position),
                Value::Text(r.stream),
                Value::Int(i64::try_from(r.version).unwrap_or(i64::MAX)),
                Value::Text(r.event_type),
                Value::Text(r.event_id.to_string()),
                Value::Int(r.recorded_at_ms),
                Value::Text(payload),
            ]);
        }
    }
    Ok(Table { columns, rows })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(i) => i.to_string(),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Text(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// RFC 4180: a header line, then a line per row; a field with a comma, a quote or a line break
/// is quoted, its quotes doubled.
fn write_csv(mut w: impl Write, t: &Table) -> anyhow::Result<()> {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    };
    let header: Vec<String> = t.columns.iter().map(|c| field(&c.name)).collect();
    write!(w, "{}\r\n", header.join(","))?;
    for row in &t.rows {
        let fields: Vec<String> = row.iter().map(|v| field(&text(v))).collect();
        write!(w, "{}\r\n", fields.join(","))?;
    }
    w.flush()?;
    Ok(())
}

/// One row group per 100,000 rows; integers as INT64, the rest as UTF-8 strings.
fn write_parquet(file: impl Write + Send, t: &Table) -> anyhow::Result<()> {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let fields: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            if c.int {
                format!("REQUIRED INT64 {};", c.name)
            } else {
                format!("REQUIRED BYTE_ARRAY {} (UTF8);", c.name)
            }
        })
        .collect();
    let schema =
        Arc::new(parquet::schema::parser::parse_message_type(&format!("message export {{ {} }}", fields.join(" ")))?);
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))?;
    for chunk in t.rows.chunks(100_000).chain(t.rows.is_empty().then_some(&t.rows[..])) {
        let mut group = writer.next_row_group()?;
        let mut i = 0;
        while let Some(mut column) = group.next_column()? {
            if t.columns[i].int {
                let values: Vec<i64> = chunk.iter().map(|r| int(&r[i])).collect();
                column.typed::<Int64Type>().write_batch(&values, None, None)?;
            } else {
                let values: Vec<ByteArray> = chunk.iter().map(|r| ByteArray::from(text(&r[i]).into_bytes())).collect();
                column.typed::<ByteArrayType>().write_batch(&values, None, None)?;
            }
            column.close()?;
            i += 1;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let t = Table {
            columns: vec![Column { name: "a".into(), int: true }, Column { name: "b".into(), int: false }],
            rows: vec![
                vec![Value::Int(1), Value::Text("plain".into())],
                vec![Value::Int(2), Value::Text("with, comma and \"quotes\"".into())],
            ],
        };
        let mut out = Vec::new();
        write_csv(&mut out, &t).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a,b\r\n1,plain\r\n2,\"with, comma and \"\"quotes\"\"\"\r\n");
    }
}
