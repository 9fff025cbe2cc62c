//! Fresh databases for tests and benchmarks: each caller gets one of its own.
use sqlx::{Connection, PgConnection};

/// The server tests create their databases on; override with `AUTODEBIT_TEST_PG_URL`.
pub fn postgres_admin_url() -> String {
    std::env::var("AUTODEBIT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Creates an empty database and returns its URL. Panics with a clear message when
/// PostgreSQL is not reachable: tests that need it fail, they never skip.
pub async fn fresh_postgres_url() -> String {
    fresh_postgres_database(&postgres_admin_url()).await
}

/// Creates an empty database on the server `admin` points at and returns its URL.
pub async fn fresh_postgres_database(admin: &str) -> String {
    let admin = admin.to_string();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "this test needs PostgreSQL at {admin} (set AUTODEBIT_TEST_PG_URL to use another server; \
             `.ci/run` starts the local one): {e}"
        )
    });
    drop_stale_databases(&mut conn).await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let name = format!("autodebit_t_{now_ms}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name} on {admin}: {e}"));
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// How old a test database may grow before a later test drops it: far longer than any run.
const STALE_AFTER_MS: u128 = 6 * 3_600_000;

/// Drops the test databases earlier runs left behind (a test's database lives as long as
/// its run, and a killed run cleans up nothing): those whose name says they were created more
/// than [`STALE_AFTER_MS`] ago. Failures are ignored; the next creation tries again.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'autodebit\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created_ms = name.strip_prefix("autodebit_t_").and_then(|r| r.split('_').next()?.parse::<u128>().ok());
        if created_ms.is_some_and(|t| t + STALE_AFTER_MS < now_ms) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut *conn).await;
        }
    }
}

/// A fresh SQLite file URL inside `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("events.db").display())
}
