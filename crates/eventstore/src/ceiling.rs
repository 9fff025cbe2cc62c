//! The raw ceiling: the same rows the store appends, written into a bare table (a primary key
//! and nothing else) with the statement shapes the store's own appends use — chunked `VALUES`
//! lists on SQLite, `UNNEST` arrays on PostgreSQL — but without version checks, indexes or
//! group commit. What the database alone manages; `autodebit bench append` measures the store
//! against it.
use crate::{Backend, EventStore, NewEvent, Result, StreamAppend};

impl EventStore {
    /// Creates the bare table (`raw_ceiling`) in this store's database.
    pub async fn create_ceiling_table(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Postgres(b) => {
                sqlx::raw_sql(
                    "CREATE TABLE raw_ceiling (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     stream TEXT NOT NULL, version BIGINT NOT NULL, event_type TEXT NOT NULL, event_id UUID NOT NULL,
                     payload BYTEA NOT NULL, metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL)",
                )
                .execute(&b.pool)
                .await?;
            }
            Backend::Sqlite(b) => {
                sqlx::raw_sql(
                    "CREATE TABLE raw_ceiling (position INTEGER PRIMARY KEY, stream TEXT NOT NULL,
                     version INTEGER NOT NULL, event_type TEXT NOT NULL, event_id BLOB NOT NULL, payload BLOB NOT NULL,
                     metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL)",
                )
                .execute(&b.writer)
                .await?;
            }
        }
        Ok(())
    }

    /// Writes `batch` into the bare table in one transaction: each stream's events numbered
    /// from 1, nothing checked.
    pub async fn insert_ceiling_rows(&self, batch: &[StreamAppend]) -> Result<()> {
        let rows: Vec<(&str, i64, &NewEvent)> = batch
            .iter()
            .flat_map(|s| s.events.iter().enumerate().map(move |(i, e)| (s.stream.as_str(), i as i64 + 1, e)))
            .collect();
        match &self.inner.backend {
            Backend::Sqlite(b) => {
                let mut tx = b.writer.begin().await?;
                for chunk in rows.chunks(1000) {
                    let mut sql = String::from(
                        "INSERT INTO raw_ceiling (stream, version, event_type, event_id, payload, metadata, recorded_at) VALUES ",
                    );
                    sql.push_str(&vec!["(?,?,?,?,?,?,?)"; chunk.len()].join(","));
                    let mut q = sqlx::query(&sql);
                    for (s, v, e) in chunk {
                        q = q
                            .bind(*s)
                            .bind(*v)
                            .bind(e.event_type.as_str())
                            .bind(e.event_id.as_bytes().as_slice())
                            .bind(e.payload.as_slice())
                            .bind(e.metadata.as_slice())
                            .bind(e.recorded_at_ms);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Backend::Postgres(b) => {
                let mut tx = b.pool.begin().await?;
                let stream: Vec<&str> = rows.iter().map(|r| r.0).collect();
                let version: Vec<i64> = rows.iter().map(|r| r.1).collect();
                let event_type: Vec<&str> = rows.iter().map(|r| r.2.event_type.as_str()).collect();
                let event_id: Vec<uuid::Uuid> = rows.iter().map(|r| r.2.event_id).collect();
                let payload: Vec<&[u8]> = rows.iter().map(|r| r.2.payload.as_slice()).collect();
                let metadata: Vec<&[u8]> = rows.iter().map(|r| r.2.metadata.as_slice()).collect();
                let recorded_at: Vec<i64> = rows.iter().map(|r| r.2.recorded_at_ms).collect();
                sqlx::query(
                    "INSERT INTO raw_ceiling (stream, version, event_type, event_id, payload, metadata, recorded_at)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::uuid[], $5::bytea[], $6::bytea[], $7::bigint[])",
                )
                .bind(&stream)
                .bind(&version)
                .bind(&event_type)
                .bind(&event_id)
                .bind(&payload)
                .bind(&metadata)
                .bind(&recorded_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}
