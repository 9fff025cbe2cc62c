//! When a failed charge is tried again: the plan's gaps, never closer than six hours.
use crate::Timestamp;
use crate::plan::MIN_RETRY_GAP_HOURS;
use chrono::Duration;

/// When to try again after the `failures`-th failed attempt (1 = the first attempt failed),
/// or `None` when the plan's retries are used up. Each gap is at least six hours, whatever the
/// plan says: a floor no configuration can lower.
pub fn next_attempt_at(failed_at: Timestamp, gaps_hours: &[u32], failures: u32) -> Option<Timestamp> {
    let gap = *gaps_hours.get(usize::try_from(failures.checked_sub(1)?).ok()?)?;
    failed_at.checked_add_signed(Duration::hours(i64::from(gap.max(MIN_RETRY_GAP_HOURS))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use proptest::prelude::*;

    #[test]
    fn follows_the_plan_then_stops() {
        let t = from_millis(0);
        assert_eq!(next_attempt_at(t, &[6, 24], 1), Some(from_millis(6 * 3_600_000)));
        assert_eq!(next_attempt_at(t, &[6, 24], 2), Some(from_millis(24 * 3_600_000)));
        assert_eq!(next_attempt_at(t, &[6, 24], 3), None);
        assert_eq!(next_attempt_at(t, &[], 1), None);
        assert_eq!(next_attempt_at(t, &[1], 1), Some(from_millis(6 * 3_600_000)), "the floor holds");
    }

    proptest! {
        /// Over any schedule and any run of failures, consecutive attempts are at least six
        /// hours apart and there are never more retries than the plan lists.
        #[test]
        fn attempts_are_six_hours_apart(gaps in proptest::collection::vec(0u32..72, 0..6), delays in proptest::collection::vec(0i64..10_000_000, 0..10)) {
            let mut at = from_millis(1_700_000_000_000);
            let mut failures = 0u32;
            let mut retries = 0usize;
            for d in delays {
                failures += 1;
                let failed_at = at + Duration::milliseconds(d);
                match next_attempt_at(failed_at, &gaps, failures) {
                    Some(next) => {
                        prop_assert!(next - failed_at >= Duration::hours(6));
                        retries += 1;
                        at = next;
                    }
                    None => break,
                }
            }
            prop_assert!(retries <= gaps.len());
        }
    }
}
