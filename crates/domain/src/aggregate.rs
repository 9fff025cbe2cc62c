//! The one shape every aggregate has: a pure `decide` that turns a command into events, or
//! refuses it, and a pure `apply` that folds an event into the state. Storage, encoding and
//! transactions live in `autodebit_runtime::repository`; nothing here does I/O.
use crate::Timestamp;

pub trait Aggregate {
    /// What the aggregate knows: its state before any event is `State::default()`.
    type State: Clone + Default + Send + Sync;
    type Command: Send;
    type Event: Send + Sync;
    type Error: std::error::Error + Send + Sync;

    /// The events `command` records against `state` at `now`, or why it cannot happen.
    fn decide(state: &Self::State, command: Self::Command, now: Timestamp) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `event`. Events are facts: this never fails.
    fn apply(state: Self::State, event: &Self::Event) -> Self::State;

    /// The state after `events`, from the start.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::State::default(), Self::apply)
    }
}
