//! The charger's workers: the attempts worker, which takes each started attempt to its one
//! outcome at the provider, the refunds worker, which carries out refunds asked for, and the
//! profit-sharing worker, which shares settled charges among their receivers. Each
//! claim due rows of their table (`store`), lease them, call the provider outside any
//! transaction, and record what it said through `app`.
//!
//! Their timers (leases, the gaps between questions) are machine time (`store::unix_ms`), not
//! the platform clock: they pace calls to a real provider.
use std::time::Duration;

pub mod attempts;
pub mod refunds;
pub mod shares;

/// The longest gap between two questions about an undecided attempt or refund.
const MAX_GAP: Duration = Duration::from_secs(300);

/// The first gap before asking about an undecided attempt or refund again; each next one is
/// twice as long, up to `MAX_GAP`.
const FIRST_GAP: Duration = Duration::from_secs(1);

/// The wait before asking again about something undecided, asked about `checks` times already:
/// 1 s, doubling, at most 5 minutes.
pub fn gap(checks: i64) -> Duration {
    let doubled = FIRST_GAP.saturating_mul(1u32 << checks.clamp(0, 16));
    doubled.min(MAX_GAP)
}

/// When to ask again, by the machine's clock, after `checks` questions.
fn next_question_ms(checks: i64) -> i64 {
    crate::store::unix_ms() + gap(checks).as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_space_out_to_five_minutes() {
        assert_eq!(gap(0), Duration::from_secs(1));
        assert_eq!(gap(3), Duration::from_secs(8));
        assert_eq!(gap(40), MAX_GAP);
    }
}
