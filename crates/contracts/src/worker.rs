//! The clean-up job, woken by the platform clock (and every few seconds): contracts past
//! their validity expire, and contracts whose validity ends within the warning period are
//! warned once (`ContractExpiring`, for the notifier; `domain::validity`); contracts unused for
//! the idle period are flagged, the payer told, and terminated if still unused when the notice
//! period has passed (`domain::zombie`); signing sessions past their time expire.
use crate::app::contracts::{AppError, Contracts};
use crate::app::signing::{Signing, StepError};
use crate::store;
use autodebit_domain::contract::{ContractCommand, TerminationMode};
use autodebit_domain::signing::SigningCommand;
use autodebit_domain::zombie::{self, ZombiePolicy};
use autodebit_domain::{ContractId, clock::from_millis, validity};
use autodebit_runtime::codec::Cause;
use std::time::Duration;
use tonic::Status;

/// At most this many contracts (or sessions) per sweep and pass.
const BATCH: i64 = 500;
/// How often the job runs when the clock does not wake it.
const PERIOD: Duration = Duration::from_secs(5);

pub fn spawn(app: Contracts, signing: Signing, zombies: ZombiePolicy) {
    tokio::spawn(async move {
        let platform = app.platform.clone();
        let mut moved = platform.clock.watch();
        loop {
            if let Err(e) = run_once(&app, &zombies).await {
                tracing::error!(error = format!("{e:#}"), "contract clean-up failed; retrying");
            }
            if let Err(e) = expire_sessions(&signing).await {
                tracing::error!(error = format!("{e:#}"), "expiring signing sessions failed; retrying");
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(PERIOD) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// One pass; returns how many contracts it changed. Each sweep reads only what its rule makes
/// due, through an index of its own.
pub async fn run_once(app: &Contracts, zombies: &ZombiePolicy) -> anyhow::Result<usize> {
    let now = app.platform.clock.now();
    let store = &app.platform.store;
    let mut changed = 0;

    for id in store::contracts::due_to_expire(store, now.timestamp_millis(), BATCH).await? {
        changed += act(app, &id, ContractCommand::Expire).await?;
    }

    let horizon = validity::warning_horizon(now).timestamp_millis();
    for id in store::contracts::due_for_warning(store, now.timestamp_millis(), horizon, BATCH).await? {
        changed += act(app, &id, ContractCommand::WarnExpiry).await?;
    }

    let cutoff = zombies.idle_cutoff(now).timestamp_millis();
    for row in store::contracts::idle_since(store, cutoff, BATCH).await? {
        let command = ContractCommand::FlagZombie { idle_since: from_millis(row.idle_since_ms) };
        changed += act(app, &row.contract_id, command).await?;
    }

    let cutoff = zombies.notice_cutoff(now).timestamp_millis();
    for id in store::contracts::flagged_by(store, cutoff, BATCH).await? {
        let command =
            ContractCommand::Terminate { mode: TerminationMode::Platform, remark: zombie::UNUSED_REMARK.into() };
        changed += act(app, &id, command).await?;
    }
    Ok(changed)
}

async fn act(app: &Contracts, raw: &str, command: ContractCommand) -> anyhow::Result<usize> {
    let Ok(id) = ContractId::parse(raw) else { return Ok(0) };
    let cause = Cause::request(format!("cleanup/{id}"));
    match app.execute(id, None, command, &cause).await {
        Ok(_) => Ok(1),
        // Ended or changed by someone else meanwhile: the next pass sees the new state.
        Err(AppError::Rule(_) | AppError::VersionMismatch { .. }) => Ok(0),
        Err(AppError::Store(e)) if e.is_conflict() => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Expires open sessions past their time; returns how many it ended.
pub async fn expire_sessions(signing: &Signing) -> anyhow::Result<usize> {
    let store = &signing.contracts.platform.store;
    let now = signing.contracts.platform.clock.now_ms();
    let ttl_ms = i64::try_from(signing.ttl().as_millis()).unwrap_or(i64::MAX);
    let mut n = 0;
    for id in store::sessions::open_since(store, now.saturating_sub(ttl_ms), BATCH).await? {
        let cause = Cause::request(format!("expire/{id}"));
        match signing.step(&id, SigningCommand::Expire, &cause).await {
            Ok(l) if l.session.status.is_final() => n += 1,
            Ok(_) | Err(StepError::Rule(_)) | Err(StepError::NotFound) => {}
            Err(e) => {
                return Err(anyhow::anyhow!("expiring session {id}: {}", Status::from(e).message().to_string()));
            }
        }
        store::sessions::mark_ended(store, &id).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::{Cycle, MerchantId, Money, PayerId, Timestamp};
    use autodebit_eventstore::{Checkpoint, EventStore, ExpectedVersion, NewEvent, StoreOptions};
    use autodebit_proto::EventKind;
    use autodebit_runtime::{Platform, PlatformClock, Shutdown, codec};

    const DAY: Duration = Duration::from_secs(86_400);
    const DAY_MS: i64 = 86_400_000;

    async fn platform(dir: &tempfile::TempDir, file: &str) -> Platform {
        let url = format!("sqlite://{}", dir.path().join(file).display());
        let store = EventStore::open(StoreOptions::new(url)).await.unwrap();
        store.migrate(&store::MIGRATIONS).await.unwrap();
        let shutdown = Shutdown::new();
        let clock = PlatformClock::test(&store, &shutdown).await.unwrap();
        Platform { store, clock, shutdown }
    }

    async fn sign(app: &Contracts, payer: &str, expires_at: Option<Timestamp>) -> ContractId {
        let id = ContractId::generate();
        let command = ContractCommand::Sign {
            contract_id: id,
            merchant_id: MerchantId::parse("m-worker").unwrap(),
            payer_id: PayerId::parse(payer).unwrap(),
            amount_per_cycle: Money::cny(1_000),
            cycle: Cycle::Monthly,
            merchant_contract_code: String::new(),
            plan_id: "pl_1".into(),
            expires_at,
            payer_phone: String::new(),
            language: String::new(),
        };
        app.execute(id, None, command, &Cause::request("t")).await.unwrap();
        id
    }

    /// Every `ContractExpiring` in the log: (contract, payer, expires at, warned at).
    async fn warnings(store: &EventStore) -> Vec<(String, String, i64, i64)> {
        let records = store.read_all(Checkpoint::default(), 10_000).await.unwrap();
        records
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| match d.kind {
                EventKind::ContractExpiring(w) => Some((w.contract_id, w.payer_id, w.expires_at_ms, w.warned_at_ms)),
                _ => None,
            })
            .collect()
    }

    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Row {
        contract_id: String,
        state: String,
        expiry_warned_at_ms: i64,
    }

    async fn rows(store: &EventStore) -> Vec<Row> {
        store
            .query_as(
                "SELECT contract_id, state, expiry_warned_at_ms FROM contracts_contracts ORDER BY contract_id",
                &[],
            )
            .await
            .unwrap()
    }

    async fn due_for_warning(p: &Platform) -> Vec<String> {
        let now = p.clock.now();
        let horizon = validity::warning_horizon(now).timestamp_millis();
        store::contracts::due_for_warning(&p.store, now.timestamp_millis(), horizon, BATCH).await.unwrap()
    }

    /// Appends every event of `from` to `to` at its version, as `autodebit log import` does.
    async fn copy_log(from: &EventStore, to: &EventStore) {
        let mut tx = to.begin().await.unwrap();
        for r in from.read_all(Checkpoint::default(), 10_000).await.unwrap() {
            let expected =
                if r.version <= 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(r.version - 1) };
            let event = NewEvent {
                event_id: r.event_id,
                event_type: r.event_type,
                payload: r.payload,
                metadata: r.metadata,
                recorded_at_ms: r.recorded_at_ms,
            };
            tx.append(&r.stream, expected, vec![event]).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_contract_is_warned_once_seven_days_before_it_expires_and_an_import_keeps_the_warning() {
        let dir = tempfile::tempdir().unwrap();
        let p = platform(&dir, "log.db").await;
        let app = Contracts::new(p.clone());
        let zombies = ZombiePolicy::default();
        let start = p.clock.now();
        let at = |days: i64| from_millis(start.timestamp_millis() + days * DAY_MS);
        let soon = sign(&app, "payer-soon", Some(at(10))).await;
        let later = sign(&app, "payer-later", Some(at(30))).await;
        sign(&app, "payer-open", None).await;

        assert_eq!(run_once(&app, &zombies).await.unwrap(), 0, "ten days ahead: nothing due");
        assert!(warnings(&p.store).await.is_empty());

        p.clock.advance(3 * DAY).await.unwrap();
        assert_eq!(due_for_warning(&p).await, vec![soon.to_string()]);
        assert_eq!(run_once(&app, &zombies).await.unwrap(), 1);
        let warned_at = at(3).timestamp_millis();
        let expected = vec![(soon.to_string(), "payer-soon".to_string(), at(10).timestamp_millis(), warned_at)];
        assert_eq!(warnings(&p.store).await, expected);
        let (c, _) = app.get(soon).await.unwrap();
        assert_eq!(c.expiry_warned_at.map(|t| t.timestamp_millis()), Some(warned_at), "the state remembers");
        assert!(due_for_warning(&p).await.is_empty(), "the row remembers");
        assert_eq!(run_once(&app, &zombies).await.unwrap(), 0, "warned once");

        // A log imported elsewhere rebuilds the rows with the warning: none is sent twice.
        let imported = platform(&dir, "imported.db").await;
        copy_log(&p.store, &imported.store).await;
        crate::rebuild_tables(&imported.store).await.unwrap();
        assert_eq!(rows(&imported.store).await, rows(&p.store).await);
        let warned: Vec<_> = rows(&imported.store).await.into_iter().filter(|r| r.expiry_warned_at_ms != 0).collect();
        assert_eq!(warned.len(), 1);
        assert_eq!(
            (warned[0].contract_id.as_str(), warned[0].expiry_warned_at_ms),
            (soon.to_string().as_str(), warned_at)
        );
        assert!(due_for_warning(&imported).await.is_empty());

        // On to the end of validity: the warned contract expires, with no second warning.
        p.clock.advance(6 * DAY).await.unwrap();
        assert_eq!(run_once(&app, &zombies).await.unwrap(), 0);
        p.clock.advance(DAY).await.unwrap();
        assert_eq!(run_once(&app, &zombies).await.unwrap(), 1, "the expiry");
        let (c, _) = app.get(soon).await.unwrap();
        assert_eq!(c.status, autodebit_domain::contract::ContractStatus::Expired);
        assert_eq!(warnings(&p.store).await.len(), 1);

        // The other contract is warned at its own time, and one moved past its whole warning
        // period at once expires unwarned.
        p.clock.advance(13 * DAY).await.unwrap();
        assert_eq!(run_once(&app, &zombies).await.unwrap(), 1);
        let all = warnings(&p.store).await;
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].0.as_str(), all[1].2 - all[1].3), (later.to_string().as_str(), 7 * DAY_MS));
        let hurried = sign(&app, "payer-hurried", Some(from_millis(p.clock.now_ms() + 8 * DAY_MS))).await;
        p.clock.advance(9 * DAY).await.unwrap();
        run_once(&app, &zombies).await.unwrap();
        let (c, _) = app.get(hurried).await.unwrap();
        assert_eq!((c.status, c.expiry_warned_at), (autodebit_domain::contract::ContractStatus::Expired, None));
        assert_eq!(warnings(&p.store).await.len(), 2);
        p.shutdown.trigger();
        imported.shutdown.trigger();
    }
}
