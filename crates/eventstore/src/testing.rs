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
    let name = format!("autodebit_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name} on {admin}: {e}"));
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// A fresh SQLite file URL inside `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("events.db").display())
}
