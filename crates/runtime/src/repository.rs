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
use autodebit_eventstore::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend, Tx,
};
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

/// What an append expects of a stream loaded at `version` (0: no stream yet).
fn expected_at(version: u64) -> ExpectedVersion {
    if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) }
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
    let Decided { state, events, encoded, .. } = decide::<A>(stream, Loaded { state, version }, command, now, cause)?;
    if encoded.is_empty() {
        return Ok(Done { state, version, events: vec![] });
    }
    let out = tx.append(stream, expected_at(version), encoded).await?;
    hook.on_events(tx, &state, &events).await?;
    Ok(Done { state, version: out.last_version, events })
}

/// Every stream of the log whose name starts with one of `prefixes`, with its events in order:
/// what a service folds to write its tables from the log alone (with [`replay_in`]).
pub async fn streams_with_prefixes(
    store: &EventStore,
    prefixes: &[&str],
) -> Result<std::collections::BTreeMap<String, Vec<RecordedEvent>>, StoreError> {
    const PAGE: i64 = 5_000;
    let mut streams: std::collections::BTreeMap<String, Vec<RecordedEvent>> = Default::default();
    let mut after = Checkpoint::default();
    loop {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.checkpoint();
        for r in page {
            if prefixes.iter().any(|p| r.stream.starts_with(p)) {
                streams.entry(r.stream.clone()).or_default().push(r);
            }
        }
    }
    Ok(streams)
}

/// Runs `hook` over a whole stream's recorded events as if they had just been appended: how
/// a service writes its tables from the log alone (after `autodebit log import`), through the
/// same hook that keeps them in step when commands run.
pub async fn replay_in<A, H>(tx: &mut Tx, records: Vec<RecordedEvent>, hook: &H) -> Result<(), H::Error>
where
    A: Stored,
    H: Hook<A>,
{
    let events: Vec<A::Event> =
        records.into_iter().filter_map(codec::decode).filter_map(|d| A::from_pb(&d.kind)).collect();
    if events.is_empty() {
        return Ok(());
    }
    let state = A::fold(&events);
    hook.on_events(tx, &state, &events).await
}

/// A command decided against a state the caller already holds (read from the event it
/// follows, or from its own table) at the version that state was read at, encoded and ready
/// to append. Deciding needs no transaction, so a follower decides a whole batch before it
/// takes the writer, and appends it with [`append_each_in`].
#[derive(Debug, Clone)]
pub struct Decided<A: Aggregate> {
    pub stream: String,
    /// The version the state was read at: the append expects the stream still there.
    pub version: u64,
    /// The state after the events.
    pub state: A::State,
    pub events: Vec<A::Event>,
    encoded: Vec<NewEvent>,
}

impl<A: Aggregate> Decided<A> {
    /// The append this decision makes, for a caller that writes it in one `append_each` with
    /// other streams' events (the due loop writes charges and their notices together).
    pub fn into_append(self) -> StreamAppend {
        StreamAppend { stream: self.stream, expected: expected_at(self.version), events: self.encoded }
    }
}

/// Decides `command` against `loaded` (the state of `stream` at its version) at `now`, and
/// encodes what it records, caused by `cause`.
pub fn decide<A: Stored>(
    stream: impl Into<String>,
    loaded: Loaded<A::State>,
    command: A::Command,
    now: Timestamp,
    cause: &Cause,
) -> Result<Decided<A>, A::Error> {
    let Loaded { state, version } = loaded;
    let events = A::decide(&state, command, now)?;
    let mut applied = state;
    let mut encoded = Vec::with_capacity(events.len());
    for e in &events {
        if let Some(pb) = A::to_pb(&applied, e) {
            encoded.push(codec::encode(pb, cause, now.timestamp_millis()));
        }
        applied = A::apply(applied, e);
    }
    Ok(Decided { stream: stream.into(), version, state: applied, events, encoded })
}

/// What a service keeps in its own tables for a batch of commands, written in the batch's
/// transaction with a statement or two for the whole batch rather than one per command.
pub trait BatchHook<A: Aggregate> {
    type Error;

    /// Called once per batch (also when nothing was appended), with the commands that
    /// recorded events, in the batch's order.
    fn on_batch(&self, tx: &mut Tx, done: &[&Done<A>]) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

impl<A: Aggregate> BatchHook<A> for NoTables
where
    A::State: Send,
{
    type Error = StoreError;

    async fn on_batch(&self, _: &mut Tx, _: &[&Done<A>]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Appends each decision at the version it was decided at, in one write for the batch. A
/// decision whose stream moved on since is passed over (its answer is the conflict) and the
/// others are written; `hook` then runs once, in `tx`, with those appended. A decision that
/// recorded nothing to keep is answered as done, unchanged.
pub async fn append_each_in<A, H, E>(
    tx: &mut Tx,
    decided: Vec<Decided<A>>,
    hook: &H,
) -> Result<Vec<Result<Done<A>, StoreError>>, E>
where
    A: Stored,
    H: BatchHook<A>,
    E: From<StoreError> + From<H::Error>,
{
    let mut appends = Vec::with_capacity(decided.len());
    let mut rest = Vec::with_capacity(decided.len());
    for d in decided {
        let Decided { stream, version, state, events, encoded } = d;
        if encoded.is_empty() {
            rest.push((None, Done { state, version, events: vec![] }));
            continue;
        }
        let at = expected_at(version);
        rest.push((Some(appends.len()), Done { state, version, events }));
        appends.push(StreamAppend { stream, expected: at, events: encoded });
    }
    let mut outcomes: Vec<Option<Result<_, StoreError>>> =
        tx.append_each(&appends).await?.into_iter().map(Some).collect();
    let answers: Vec<Result<Done<A>, StoreError>> = rest
        .into_iter()
        .map(|(i, mut done)| match i.and_then(|i| outcomes[i].take()) {
            None => Ok(done),
            Some(Ok(out)) => {
                done.version = out.last_version;
                Ok(done)
            }
            Some(Err(e)) => Err(e),
        })
        .collect();
    let appended: Vec<&Done<A>> =
        answers.iter().filter_map(|a| a.as_ref().ok()).filter(|d| !d.events.is_empty()).collect();
    hook.on_batch(tx, &appended).await?;
    Ok(answers)
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
            origin: Default::default(),
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
        let err =
            execute_in::<Charge, _, TestError>(&mut tx, &id.stream(), Some(0), schedule(id), now, &cause, &NoTables)
                .await
                .unwrap_err();
        assert!(matches!(err, TestError::Version(VersionMismatch { expected: 0, actual: 1, .. })), "{err}");
        drop(tx);

        let loaded = load::<Charge>(&store, &id.stream()).await.unwrap();
        assert_eq!(loaded.version, 1);
        assert!(loaded.state.is_some());
    }

    /// Counts what it is shown, as a table hook would write it.
    struct Seen(std::sync::Mutex<Vec<(u64, usize)>>);

    impl BatchHook<Charge> for Seen {
        type Error = StoreError;

        async fn on_batch(&self, _: &mut Tx, done: &[&Done<Charge>]) -> Result<(), StoreError> {
            self.0.lock().unwrap().extend(done.iter().map(|d| (d.version, d.events.len())));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_batch_appends_each_at_its_version_and_passes_over_a_stale_one() {
        let (_dir, store) = store().await;
        let now = from_millis(1_700_000_000_000);
        let cause = Cause::request("t");
        let ids: Vec<ChargeId> =
            (0..3).map(|i| ChargeId::for_trigger(ContractId::generate(), &format!("batch-{i}"))).collect();

        // Three new charges in one batch, decided before the transaction.
        let decided: Vec<Decided<Charge>> = ids
            .iter()
            .map(|id| {
                decide::<Charge>(id.stream(), Loaded { state: None, version: 0 }, schedule(*id), now, &cause).unwrap()
            })
            .collect();
        let states: Vec<_> = decided.iter().map(|d| d.state.clone()).collect();
        let mut tx = store.begin().await.unwrap();
        let out = append_each_in::<Charge, _, StoreError>(&mut tx, decided, &NoTables).await.unwrap();
        tx.commit().await.unwrap();
        assert!(out.iter().all(|d| d.as_ref().is_ok_and(|d| d.version == 1)));

        // The second moves on meanwhile; a batch decided on what it was at version 1 keeps the others.
        let mut tx = store.begin().await.unwrap();
        let start = || ChargeCommand::StartAttempt { provider: "simulator".into() };
        execute_in::<Charge, _, TestError>(&mut tx, &ids[1].stream(), None, start(), now, &cause, &NoTables)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let decided: Vec<Decided<Charge>> = ids
            .iter()
            .zip(states)
            .map(|(id, state)| {
                decide::<Charge>(id.stream(), Loaded { state, version: 1 }, start(), now, &cause).unwrap()
            })
            .collect();
        let seen = Seen(Default::default());
        let mut tx = store.begin().await.unwrap();
        let out = append_each_in::<Charge, _, StoreError>(&mut tx, decided, &seen).await.unwrap();
        tx.commit().await.unwrap();
        assert!(out[0].as_ref().is_ok_and(|d| d.version == 2 && d.state.as_ref().unwrap().started == 1));
        assert!(out[1].as_ref().is_err_and(|e| e.is_conflict()));
        assert!(out[2].is_ok());
        assert_eq!(*seen.0.lock().unwrap(), vec![(2, 1), (2, 1)], "the hook sees the appended ones, once");
        assert_eq!(load::<Charge>(&store, &ids[1].stream()).await.unwrap().version, 2, "nothing doubled");

        // A decision the rules refuse never reaches the batch.
        let state = load::<Charge>(&store, &ids[0].stream()).await.unwrap();
        assert!(matches!(
            decide::<Charge>(ids[0].stream(), state, start(), now, &cause),
            Err(ChargeError::AlreadyStarted(1))
        ));
    }
}
