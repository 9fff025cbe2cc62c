//! Five `autodebit serve` processes, one per service, sharing one PostgreSQL log.
mod scenario;
mod support;

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
    scenario::sign_advance_charge(&e).await;
    drop(e);
    for p in procs {
        assert!(p.terminate().success(), "a service did not stop cleanly on SIGTERM");
    }
}
