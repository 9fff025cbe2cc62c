//! Zombie contracts: an active contract with no successful charge for a long time is flagged
//! (the payer is told) and, if still unused when the notice period has passed, terminated by
//! the platform. A success clears the flag and starts the idle time anew.
use crate::Timestamp;
use crate::contract::ContractStatus;
use std::time::Duration;

/// Days without a successful charge after which an active contract is flagged.
pub const IDLE_AFTER_DAYS: u64 = 180;
/// Days after the flag before a contract still unused is terminated.
pub const NOTICE_PERIOD_DAYS: u64 = 30;
/// The remark of a termination for disuse.
pub const UNUSED_REMARK: &str = "unused: no successful charge since the notice";

const DAY_SECS: u64 = 86_400;

/// How long a contract may stay unused, and how long after the flag it is terminated.
/// Operators can change both (`--zombie-after-days`, `--zombie-notice-days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZombiePolicy {
    /// No successful charge for this long flags a contract.
    pub idle_after: Duration,
    /// A flagged contract still unused this long after the notice is terminated.
    pub notice_period: Duration,
}

impl Default for ZombiePolicy {
    fn default() -> Self {
        ZombiePolicy {
            idle_after: Duration::from_secs(IDLE_AFTER_DAYS * DAY_SECS),
            notice_period: Duration::from_secs(NOTICE_PERIOD_DAYS * DAY_SECS),
        }
    }
}

/// The moment a contract went idle: the later of its signing and its last successful charge.
pub fn idle_since(signed_at: Timestamp, last_success: Option<Timestamp>) -> Timestamp {
    last_success.map_or(signed_at, |s| s.max(signed_at))
}

/// `now` less `d`, or the earliest representable time when that is out of range.
fn before(now: Timestamp, d: Duration) -> Timestamp {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

impl ZombiePolicy {
    /// Contracts idle since this moment or earlier are flagged at `now`.
    pub fn idle_cutoff(&self, now: Timestamp) -> Timestamp {
        before(now, self.idle_after)
    }

    /// Contracts flagged at this moment or earlier are terminated at `now`.
    pub fn notice_cutoff(&self, now: Timestamp) -> Timestamp {
        before(now, self.notice_period)
    }

    /// Whether a contract in `status`, flagged or not, idle since `idle_since`, is flagged at
    /// `now`: an active unflagged one idle for the whole idle period.
    pub fn flags(&self, status: ContractStatus, flagged: bool, idle_since: Timestamp, now: Timestamp) -> bool {
        status == ContractStatus::Active && !flagged && idle_since <= self.idle_cutoff(now)
    }

    /// Whether a contract in `status` flagged at `flagged_at` is terminated at `now`: one not
    /// ended (active or suspended) whose notice period has passed without a success.
    pub fn terminates(&self, status: ContractStatus, flagged_at: Option<Timestamp>, now: Timestamp) -> bool {
        !status.is_final() && flagged_at.is_some_and(|t| t <= self.notice_cutoff(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use proptest::prelude::*;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn idle_for_180_days_is_flagged_and_30_days_later_terminated() {
        let p = ZombiePolicy::default();
        assert_eq!(p.idle_after, Duration::from_secs(180 * 86_400));
        assert_eq!(p.notice_period, Duration::from_secs(30 * 86_400));
        let signed = from_millis(1_700_000_000_000);
        let success = from_millis(1_700_000_000_000 + 10 * DAY_MS);
        let since = idle_since(signed, Some(success));
        assert_eq!(since, success, "the last success, being later than signing");
        assert_eq!(idle_since(signed, None), signed);
        let day = |n: i64| from_millis(since.timestamp_millis() + n * DAY_MS);
        assert!(!p.flags(ContractStatus::Active, false, since, day(180) - chrono::Duration::milliseconds(1)));
        assert!(p.flags(ContractStatus::Active, false, since, day(180)));
        assert!(!p.flags(ContractStatus::Active, true, since, day(180)), "flagged already");
        assert!(!p.flags(ContractStatus::Suspended, false, since, day(400)), "only active contracts are flagged");
        let flagged = day(180);
        assert!(!p.terminates(ContractStatus::Active, Some(flagged), day(209)));
        assert!(p.terminates(ContractStatus::Active, Some(flagged), day(210)));
        assert!(p.terminates(ContractStatus::Suspended, Some(flagged), day(210)));
        assert!(!p.terminates(ContractStatus::Terminated, Some(flagged), day(300)));
        assert!(!p.terminates(ContractStatus::Active, None, day(300)), "not flagged");
    }

    #[test]
    fn a_policy_too_long_to_represent_flags_nothing() {
        let p = ZombiePolicy { idle_after: Duration::MAX, notice_period: Duration::MAX };
        let now = from_millis(1_700_000_000_000);
        assert!(!p.flags(ContractStatus::Active, false, from_millis(0), now));
        assert!(!p.terminates(ContractStatus::Active, Some(from_millis(0)), now));
    }

    proptest! {
        /// A contract is flagged exactly when it has been idle for the idle period, whichever
        /// of signing and the last success came later.
        #[test]
        fn flagged_exactly_after_the_idle_period(
            signed in 0i64..2_000_000_000_000,
            success in proptest::option::of(0i64..2_000_000_000_000),
            idle_days in 1u64..400,
            elapsed in 0i64..2_000_000_000_000,
        ) {
            let p = ZombiePolicy { idle_after: Duration::from_secs(idle_days * 86_400), ..ZombiePolicy::default() };
            let since = idle_since(from_millis(signed), success.map(from_millis));
            prop_assert_eq!(since.timestamp_millis(), success.unwrap_or(signed).max(signed));
            let now = from_millis(since.timestamp_millis() + elapsed);
            prop_assert_eq!(p.flags(ContractStatus::Active, false, since, now), elapsed >= idle_days as i64 * DAY_MS);
        }
    }
}
