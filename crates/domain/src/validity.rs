//! A contract's validity: it stays in force for its plan's validity days from signing, and
//! expires once that time has come (the clean-up job records the expiry).
use crate::Timestamp;
use crate::contract::ContractStatus;

/// A contract may outlive its plan's service period by at most this many days.
pub const VALIDITY_GRACE_DAYS: u32 = 30;

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

    proptest! {
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
