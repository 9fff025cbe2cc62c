//! The HTTP listener: what browsers, providers and probes call. Liveness, readiness against
//! the database, and Prometheus metrics.
use crate::Platform;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

pub fn router(platform: Platform) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { crate::metrics::render() }))
        .with_state(platform)
}

async fn ready(State(p): State<Platform>) -> (StatusCode, &'static str) {
    if p.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match p.store.query("SELECT 1", &[]).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
}

/// Serves `extra` routes beside the standard ones until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, platform: &Platform, extra: axum::Router) -> anyhow::Result<()> {
    let app = router(platform.clone()).merge(extra);
    let shutdown = platform.shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await?;
    Ok(())
}
