//! Mutual TLS: the gRPC listener serving TLS with `--tls-cert`/`--tls-key` and requiring
//! client certificates from `--tls-client-ca`, `autodebit call` speaking to it, and the
//! connections to PostgreSQL over TLS from `sslmode` in the URL. The certificates are test-only
//! ones in `tests/fixtures/tls` (see its README).
use crate::support::{self, Process};

use autodebit_proto::admin::v1::GetClockRequest;
use autodebit_proto::admin::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// A channel to `addr` over TLS, trusting the test CA, presenting `identity` if any.
async fn connect(addr: std::net::SocketAddr, identity: Option<(&str, &str)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem("ca.pem"))).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pem(cert), pem(key)));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

async fn serving(ch: Channel) -> Result<i32, tonic::Status> {
    let r = HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(r.into_inner().status)
}

#[tokio::test]
async fn grpc_over_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(&[
        "run",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--test-clock",
        "--tls-cert",
        &fixture("server.pem"),
        "--tls-key",
        &fixture("server.key"),
        "--tls-client-ca",
        &fixture("ca.pem"),
    ]);

    // A client with a certificate the CA issued: served, and its calls authenticated as ever.
    let ch = connect(p.grpc, Some(("client.pem", "client.key"))).await.expect("a TLS connection");
    assert_eq!(serving(ch.clone()).await.unwrap(), ServingStatus::Serving as i32);
    let clock = AdminServiceClient::new(ch.clone()).get_clock(support::op(GetClockRequest {})).await.unwrap();
    assert!(clock.into_inner().test_clock);

    // No client certificate, one from another CA, or no TLS at all: nothing is answered.
    for identity in [None, Some(("other.pem", "other.key"))] {
        let refused = match connect(p.grpc, identity).await {
            Err(_) => true,
            Ok(ch) => serving(ch).await.is_err(),
        };
        assert!(refused, "a client presenting {identity:?} was served");
    }
    let plain = Channel::from_shared(format!("http://{}", p.grpc)).unwrap().connect().await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => serving(ch).await.is_err(),
    };
    assert!(refused, "a plaintext client was served");

    // `autodebit call` with the CA and the client's certificate.
    let call = |extra: &[&str]| {
        let mut args = vec!["call", "grpc.health.v1.Health/Check", "{}", "--addr"];
        let addr = p.grpc.to_string();
        args.push(&addr);
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_autodebit")).args(&args).output().unwrap()
    };
    let (ca, cert, key) = (fixture("ca.pem"), fixture("client.pem"), fixture("client.key"));
    let out = call(&["--ca", &ca, "--client-cert", &cert, "--client-key", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = call(&["--ca", &ca]);
    assert!(!out.status.success(), "no client certificate, no answer");
    let out = call(&["--ca", "/nonexistent/ca.pem"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca: cannot read /nonexistent/ca.pem"));
}

#[test]
fn a_certificate_that_cannot_be_read_is_named_with_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["run", "--data-dir", dir.path().to_str().unwrap(), "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--tls-cert", "/nonexistent/server.pem", "--tls-key"])
        .arg(fixture("server.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert: cannot read /nonexistent/server.pem"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["run", "--data-dir", dir.path().to_str().unwrap(), "--tls-cert"])
        .arg(fixture("server.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"), "a certificate needs its key");
}

#[tokio::test]
async fn the_platform_reaches_postgresql_over_tls_when_the_url_asks_for_it() {
    let url = autodebit_eventstore::testing::fresh_postgres_url().await;
    let database = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let tls_url = format!("{url}{}sslmode=require", if url.contains('?') { '&' } else { '?' });
    let p = Process::start(&["serve", "contracts", "--database-url", &tls_url]);
    let ch = p.channel().await;
    assert_eq!(serving(ch).await.unwrap(), ServingStatus::Serving as i32);
    let admin = sqlx::PgPool::connect(&autodebit_eventstore::testing::postgres_admin_url()).await.unwrap();
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1",
    )
    .bind(&database)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(connections > 0, "the service holds connections to {database}");
    assert_eq!(encrypted, connections, "every one of them over TLS");
}
