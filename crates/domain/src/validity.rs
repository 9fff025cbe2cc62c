//! A contract's validity: it stays in force for its plan's validity days from signing, the
//! payer is warned [`EXPIRY_WARNING_DAYS`] before it ends, and it expires once that time has
//! come (the clean-up job records the warning and the expiry).
use crate::Timestamp;
use crate::contract::ContractStatus;

/// A contract may outlive its plan's service period by at most this many days.
pub const VALIDITY_GRACE_DAYS: u32 = 30;

/// The payer is warned this many days before a contract's validity ends.
pub const EXPIRY_WARNING_DAYS: u32 = 7;

fn warning_period() -> chrono::Duration {
    chrono::Duration::days(i64::from(EXPIRY_WARNING_DAYS))
}

/// When a contract signed at `signed_at` on a plan valid for `validity_days` expires (`None`
/// past the end of representable time).
pub fn expires_at(signed_at: Timestamp, validity_days: u32) -> Option<Timestamp> {
    signed_at.checked_add_signed(chrono::Duration::days(i64::from(validity_days)))
}

/// Whether a validity ending at `expires_at` has run out at `now`.
pub fn has_expired(expires_at: Timestamp, now: Timestamp) -> bool {
    expires_at <= now
}

/// Whether a contract in `status` with this end of validity is due to expire at `now`: one
/// not yet ended (active or suspended) whose validity has run out. A contract without an end
/// of validity never expires.
pub fn due_to_expire(status: ContractStatus, expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    !status.is_final() && expires_at.is_some_and(|t| has_expired(t, now))
}

/// The moment from which a contract whose validity ends at `expires_at` is due its warning:
/// [`EXPIRY_WARNING_DAYS`] before the end (the earliest representable time when that is out of
/// range).
pub fn warning_from(expires_at: Timestamp) -> Timestamp {
    expires_at.checked_sub_signed(warning_period()).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// The latest end of validity a contract may have to be due its warning at `now`:
/// [`EXPIRY_WARNING_DAYS`] on (the latest representable time when that is out of range). The
/// clean-up job seeks contracts whose validity ends after `now` and by this moment.
pub fn warning_horizon(now: Timestamp) -> Timestamp {
    now.checked_add_signed(warning_period()).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// Whether a contract in `status` with this end of validity, `warned` already or not, is due
/// its expiry warning at `now`: one not ended (active or suspended) and not warned yet, whose
/// validity ends within [`EXPIRY_WARNING_DAYS`] but has not run out (a contract past its end is
/// expired, not warned). A contract without an end of validity is never warned.
pub fn due_for_warning(status: ContractStatus, expires_at: Option<Timestamp>, warned: bool, now: Timestamp) -> bool {
    !status.is_final() && !warned && expires_at.is_some_and(|t| !has_expired(t, now) && warning_from(t) <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use proptest::prelude::*;

    const DAY_MS: i64 = 86_400_000;

    #[test]
    fn a_contract_expires_its_validity_days_after_signing() {
        let signed = from_millis(1_700_000_000_000);
        let end = expires_at(signed, 395).unwrap();
        assert_eq!(end.timestamp_millis() - signed.timestamp_millis(), 395 * DAY_MS);
        assert!(!due_to_expire(ContractStatus::Active, Some(end), from_millis(end.timestamp_millis() - 1)));
        assert!(due_to_expire(ContractStatus::Active, Some(end), end));
        assert!(due_to_expire(ContractStatus::Suspended, Some(end), end));
        assert!(!due_to_expire(ContractStatus::Terminated, Some(end), end), "ended already");
        assert!(!due_to_expire(ContractStatus::Expired, Some(end), end), "expired already");
        assert!(!due_to_expire(ContractStatus::Active, None, end), "no end of validity");
    }

    #[test]
    fn a_contract_is_warned_seven_days_before_it_expires() {
        let end = expires_at(from_millis(1_700_000_000_000), 395).unwrap();
        let at = |ms: i64| from_millis(end.timestamp_millis() + ms);
        assert_eq!(EXPIRY_WARNING_DAYS, 7);
        assert_eq!(warning_from(end), at(-7 * DAY_MS));
        assert!(!due_for_warning(ContractStatus::Active, Some(end), false, at(-7 * DAY_MS - 1)), "too early");
        assert!(due_for_warning(ContractStatus::Active, Some(end), false, at(-7 * DAY_MS)));
        assert!(due_for_warning(ContractStatus::Suspended, Some(end), false, at(-DAY_MS)), "suspended, still in force");
        assert!(due_for_warning(ContractStatus::Active, Some(end), false, at(-1)), "the last moment");
        assert!(!due_for_warning(ContractStatus::Active, Some(end), false, end), "expired, not warned");
        assert!(!due_for_warning(ContractStatus::Active, Some(end), true, at(-DAY_MS)), "warned already");
        assert!(!due_for_warning(ContractStatus::Terminated, Some(end), false, at(-DAY_MS)), "ended");
        assert!(!due_for_warning(ContractStatus::Expired, Some(end), false, at(-DAY_MS)), "ended");
        assert!(!due_for_warning(ContractStatus::Active, None, false, at(-DAY_MS)), "no end of validity");
        assert_eq!(warning_horizon(at(-7 * DAY_MS)), end);
    }

    #[test]
    fn the_warning_period_saturates_at_the_ends_of_time() {
        let (min, max) = (chrono::DateTime::<chrono::Utc>::MIN_UTC, chrono::DateTime::<chrono::Utc>::MAX_UTC);
        assert_eq!(warning_from(min), min);
        assert_eq!(warning_horizon(max), max);
        assert!(due_for_warning(ContractStatus::Active, Some(min + chrono::Duration::days(1)), false, min));
    }

    proptest! {
        /// A contract is due its warning exactly in the last seven days of its validity, once,
        /// and the clean-up job's bounds (an end after `now`, by the horizon) find exactly the
        /// contracts the rule makes due.
        #[test]
        fn the_warning_falls_due_exactly_seven_days_ahead(
            signed_ms in 0i64..4_000_000_000_000,
            days in 1u32..4_000,
            after_ms in -20 * DAY_MS..10 * DAY_MS,
            warned: bool,
        ) {
            let end = expires_at(from_millis(signed_ms), days).unwrap();
            let now = from_millis(end.timestamp_millis() + after_ms);
            let due = due_for_warning(ContractStatus::Active, Some(end), warned, now);
            prop_assert_eq!(due, !warned && (-7 * DAY_MS..0).contains(&after_ms));
            prop_assert_eq!(
                due_for_warning(ContractStatus::Active, Some(end), false, now),
                end > now && end <= warning_horizon(now)
            );
            // Never due both a warning and the expiry.
            prop_assert!(!(due && due_to_expire(ContractStatus::Active, Some(end), now)));
        }

        /// A contract is in force until exactly its validity days have passed, never longer.
        #[test]
        fn expiry_comes_exactly_at_the_end_of_validity(
            signed_ms in 0i64..4_000_000_000_000,
            days in 1u32..4_000,
            after_ms in -10 * DAY_MS..10 * DAY_MS,
        ) {
            let end = expires_at(from_millis(signed_ms), days).unwrap();
            let now = from_millis(end.timestamp_millis() + after_ms);
            prop_assert_eq!(due_to_expire(ContractStatus::Active, Some(end), now), after_ms >= 0);
        }
    }
}
