//! Five `autodebit serve` processes, one per service, sharing one PostgreSQL log.
use crate::{scenario, support};

use scenario::Endpoints;
use support::Process;

#[tokio::test]
async fn five_processes_on_postgres_sign_advance_charge() {
    let url = autodebit_eventstore::testing::fresh_postgres_url().await;
    let serve = |svc: &str| {
        Process::start(&["serve", svc, "--database-url", &url, "--test-clock", "--decline-basis-points", "0"])
    };
    // Started one after another so the first migrates; concurrent starts are safe too.
    let procs: Vec<Process> =
        ["contracts", "scheduler", "charger", "notifier", "analytics"].iter().map(|s| serve(s)).collect();
    let e = Endpoints {
        contracts: procs[0].channel().await,
        scheduler: procs[1].channel().await,
        charger: procs[2].channel().await,
        notifier: procs[3].channel().await,
        analytics: procs[4].channel().await,
    };
    // Each process lists, in reflection and in health, only what it serves.
    let names = [
        "autodebit.contracts.v1.ContractsService",
        "autodebit.scheduler.v1.SchedulerService",
        "autodebit.charger.v1.ChargerService",
        "autodebit.notifier.v1.NotifierService",
        "autodebit.analytics.v1.AnalyticsService",
    ];
    for (i, ch) in [&e.contracts, &e.scheduler, &e.charger, &e.notifier, &e.analytics].into_iter().enumerate() {
        let listed = support::listed_services(ch).await;
        let ours: Vec<&String> = listed.iter().filter(|n| n.starts_with("autodebit.")).collect();
        // Contracts also serves merchants and plans, the scheduler risk, the charger settlement,
        // reconciliation and complaints, the notifier webhooks; each, the test clock's admin
        // service.
        let expected = match i {
            0 => 4,
            2 => 5,
            1 | 3 => 3,
            _ => 2,
        };
        assert_eq!(ours.len(), expected, "{listed:?}");
        assert!(ours.iter().any(|n| *n == names[i]), "{listed:?}");
        assert!(listed.iter().any(|n| n == "grpc.health.v1.Health"), "{listed:?}");
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        for (j, other) in names.iter().enumerate() {
            let got = health.check(tonic_health::pb::HealthCheckRequest { service: other.to_string() }).await;
            assert_eq!(got.is_ok(), i == j, "{other} on the process serving {}: {got:?}", names[i]);
        }
    }
    scenario::sign_advance_charge(&e).await;
    drop(e);
    for p in procs {
        assert!(p.terminate().success(), "a service did not stop cleanly on SIGTERM");
    }
}

/// A deployment's migration step: `migrate --wait` applies nothing and waits (a service's init
/// container), `migrate` brings the schema up (the migration job), after which the waiter ends
/// and a service starts on a database it did not migrate.
#[tokio::test]
async fn migrate_applies_the_schema_that_migrate_wait_waits_for() {
    let url = autodebit_eventstore::testing::fresh_postgres_url().await;
    let autodebit = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"));
        c.args(args).arg("--database-url").arg(&url);
        c
    };
    let gave_up = autodebit(&["migrate", "--wait", "--timeout-seconds", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&gave_up.stderr);
    assert!(!gave_up.status.success(), "an empty database has every migration pending");
    assert!(stderr.contains("migrations pending, first eventstore 1"), "{stderr}");
    let tables: i64 = {
        let store = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&store)
            .await
            .unwrap()
    };
    assert_eq!(tables, 0, "--wait created nothing");

    let waiter = autodebit(&["migrate", "--wait", "--timeout-seconds", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let migrated = autodebit(&["migrate"]).output().unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert_eq!(String::from_utf8_lossy(&migrated.stdout).trim(), "schema up to date");
    let waited = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap()).await.unwrap();
    assert!(waited.status.success());
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "schema up to date");
    // Again: nothing left to do.
    assert!(autodebit(&["migrate"]).status().unwrap().success());

    let charger = Process::start(&["serve", "charger", "--database-url", &url]);
    charger.channel().await;
    let status = charger.terminate();
    assert!(status.success(), "{status:?}");
}
