//! One way to run a command against an aggregate: load its stream inside the transaction,
//! decide, encode, append at the version it was loaded at, and let the service keep its own
//! tables in step in the same transaction. Every service's use cases go through here.
//!
//! ```text
//!  tx ─ load (fold the stream) ─ decide(state, command, now) ─ encode ─ append @ version ─ hook
//! ```
//!
//! A concurrent writer that appended in between makes the append fail with a conflict, and
//! the transaction rolls back whole: effects and events land together or not at all.
use crate::codec::{self, Cause};
use autodebit_domain::{Aggregate, Timestamp};
use autodebit_eventstore::{ExpectedVersion, RecordedEvent, StoreError, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

/// How an aggregate's events look in the log. Implemented next to the protobuf conversions.
pub trait Stored: Aggregate {
    /// The protobuf form of `event`, given the state before it (some events carry ids the
    /// state holds); `None` for an event the log does not keep.
    fn to_pb(before: &Self::State, event: &Self::Event) -> Option<pb::Event>;

    /// The domain event a logged one stands for; `None` for kinds that belong to another
    /// aggregate (or to no aggregate's state).
    fn from_pb(kind: &EventKind) -> Option<Self::Event>;

    /// The state and version of a stream from its recorded events.
    fn fold_records(records: Vec<RecordedEvent>) -> Loaded<Self::State> {
        let version = records.last().map(|r| r.version).unwrap_or(0);
        let state = records
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| Self::from_pb(&d.kind))
            .fold(Self::State::default(), |s, e| Self::apply(s, &e));
        Loaded { state, version }
    }
}

/// A stream's state and the version it was read at (0: no stream yet).
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub state: S,
    pub version: u64,
}

/// What a command did: the state after it, the stream's version, and the events recorded
/// (empty when the command changed nothing).
#[derive(Debug, Clone)]
pub struct Done<A: Aggregate> {
    pub state: A::State,
    pub version: u64,
    pub events: Vec<A::Event>,
}

/// The caller expected another version of the stream (optimistic concurrency from a client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stream} is at version {actual}, not {expected}")]
pub struct VersionMismatch {
    pub stream: String,
    pub expected: u64,
    pub actual: u64,
}

/// What a service keeps in its own tables for an aggregate's events, written in the same
/// transaction as the events themselves.
pub trait Hook<A: Aggregate> {
    type Error;

    /// Called once per command that recorded events, with the state after all of them.
    fn on_events(
        &self,
        tx: &mut Tx,
        state: &A::State,
        events: &[A::Event],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A hook that keeps no table.
pub struct NoTables;

impl<A: Aggregate> Hook<A> for NoTables {
    type Error = StoreError;

    async fn on_events(&self, _: &mut Tx, _: &A::State, _: &[A::Event]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Loads `stream` as `tx` sees it (its own appends included; no second connection taken).
pub async fn load_in<A: Stored>(tx: &mut Tx, stream: &str) -> Result<Loaded<A::State>, StoreError> {
    Ok(A::fold_records(tx.read_stream(stream, 0).await?))
}

/// Loads `stream` outside any transaction, for reads.
pub async fn load<A: Stored>(
    store: &autodebit_eventstore::EventStore,
    stream: &str,
) -> Result<Loaded<A::State>, StoreError> {
    Ok(A::fold_records(store.read_stream(stream, 0).await?))
}

/// Runs `command` against the aggregate in `stream` inside `tx`: load, check the version the
/// caller expects (if any), decide at `now`, append at the loaded version, run `hook`.
/// The caller commits.
pub async fn execute_in<A, H, E>(
    tx: &mut Tx,
    stream: &str,
    expected: Option<u64>,
    command: A::Command,
    now: Timestamp,
    cause: &Cause,
    hook: &H,
) -> Result<Done<A>, E>
where
    A: Stored,
    H: Hook<A>,
    E: From<A::Error> + From<StoreError> + From<VersionMismatch> + From<H::Error>,
{
    let Loaded { state, version } = load_in::<A>(tx, stream).await?;
    if let Some(expected) = expected
        && expected != version
    {
        return Err(VersionMismatch { stream: stream.to_string(), expected, actual: version }.into());
    }
    let events = A::decide(&state, command, now)?;
    let mut applied = state;
    let mut encoded = Vec::with_capacity(events.len());
    for e in &events {
        if let Some(pb) = A::to_pb(&applied, e) {
            encoded.push(codec::encode(pb, cause, now.timestamp_millis()));
        }
        applied = A::apply(applied, e);
    }
    if encoded.is_empty() {
        return Ok(Done { state: applied, version, events: vec![] });
    }
    let at = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
    let out = tx.append(stream, at, encoded).await?;
    hook.on_events(tx, &applied, &events).await?;
    Ok(Done { state: applied, version: out.last_version, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::charge::{Charge, ChargeCommand, ChargeError, ChargeStatus};
    use autodebit_domain::{ChargeId, ContractId, MerchantId, Money, PayerId, clock::from_millis};
    use autodebit_eventstore::{EventStore, StoreOptions};

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Rule(#[from] ChargeError),
        #[error(transparent)]
        Store(#[from] StoreError),
        #[error(transparent)]
        Version(#[from] VersionMismatch),
    }

    fn schedule(id: ChargeId) -> ChargeCommand {
        ChargeCommand::Schedule {
            charge_id: id,
            contract_id: ContractId::generate(),
            merchant_id: MerchantId::parse("m-repo").unwrap(),
            payer_id: PayerId::parse("p-repo").unwrap(),
            amount: Money::cny(1_500),
            period: 1,
            due_at: from_millis(1_700_000_000_000),
        }
    }

    async fn store() -> (tempfile::TempDir, EventStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        (dir, EventStore::open(StoreOptions::new(url)).await.unwrap())
    }

    #[tokio::test]
    async fn decides_appends_at_the_loaded_version_and_refuses_a_stale_one() {
        let (_dir, store) = store().await;
        let id = ChargeId::for_trigger(ContractId::generate(), "repo-test");
        let now = from_millis(1_700_000_000_000);
        let cause = Cause::request("t");

        let mut tx = store.begin().await.unwrap();
        let done: Done<Charge> =
            execute_in::<Charge, _, TestError>(&mut tx, &id.stream(), None, schedule(id), now, &cause, &NoTables)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(done.version, 1);
        assert_eq!(done.state.as_ref().map(|c| c.status), Some(ChargeStatus::Scheduled));

        // A second Schedule is refused by the rule, and nothing is appended.
        let mut tx = store.begin().await.unwrap();
        let err = execute_in::<Charge, _, TestError>(&mut tx, &id.stream(), None, schedule(id), now, &cause, &NoTables)
            .await
            .unwrap_err();
        assert!(matches!(err, TestError::Rule(ChargeError::AlreadyScheduled)), "{err}");
        drop(tx);

        // A caller that read version 0 is told the stream moved on.
        let mut tx = store.begin().await.unwrap();
        let err = execute_in::<Charge, _, TestError>(&mut tx, &id.stream(), Some(0), schedule(id), now, &cause, &NoTables)
            .await
            .unwrap_err();
        assert!(matches!(err, TestError::Version(VersionMismatch { expected: 0, actual: 1, .. })), "{err}");
        drop(tx);

        let loaded = load::<Charge>(&store, &id.stream()).await.unwrap();
        assert_eq!(loaded.version, 1);
        assert!(loaded.state.is_some());
    }
}
