//! When a failed charge is tried again (the retry schedule):
//! - only a failure the provider calls retryable is tried again (`ChargeFailed.retryable`;
//!   `charge::decide` refuses `Retry` otherwise);
//! - the `n`-th failure is followed by the plan's `n`-th gap, and nothing once the plan's gaps
//!   are used up;
//! - never sooner than [`MIN_RETRY_GAP_HOURS`] after the failure, whatever the plan says: a
//!   floor no configuration can lower (plans are refused below it as well).
use crate::Timestamp;
use chrono::Duration;

/// The shortest gap between a failed attempt and the next, in hours.
pub const MIN_RETRY_GAP_HOURS: u32 = 6;

/// When to try again after the `failures`-th failed attempt (1 = the first attempt failed),
/// or `None` when the plan's retries are used up. Each gap is at least [`MIN_RETRY_GAP_HOURS`],
/// whatever the plan says.
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
        assert_eq!(next_attempt_at(t, &[6], 0), None, "no failure, no retry");
    }

    #[test]
    fn the_floor_is_six_hours() {
        assert_eq!(MIN_RETRY_GAP_HOURS, 6);
    }

    #[test]
    fn only_a_retryable_failure_is_tried_again() {
        use crate::charge::{self, ChargeCommand, ChargeError, ChargeStatus};
        use crate::{ChargeId, ContractId, MerchantId, Money, PayerId};
        let contract_id = ContractId::generate();
        let schedule = ChargeCommand::Schedule {
            charge_id: ChargeId::for_period(contract_id, 1),
            contract_id,
            merchant_id: MerchantId::parse("m").unwrap(),
            payer_id: PayerId::parse("p").unwrap(),
            amount: Money::cny(100),
            period: 1,
            due_at: from_millis(0),
            origin: Default::default(),
        };
        let scheduled = charge::decide(&None, schedule, from_millis(0)).unwrap().iter().fold(None, charge::apply);
        let fail =
            |retryable| ChargeCommand::RecordFailure { provider_code: "X".into(), message: String::new(), retryable };
        let hard = charge::decide(&scheduled, fail(false), from_millis(1))
            .unwrap()
            .iter()
            .fold(scheduled.clone(), charge::apply);
        assert_eq!(charge::decide(&hard, ChargeCommand::Retry, from_millis(2)), Err(ChargeError::NotRetryable));
        let soft =
            charge::decide(&scheduled, fail(true), from_millis(1)).unwrap().iter().fold(scheduled, charge::apply);
        let retried =
            charge::decide(&soft, ChargeCommand::Retry, from_millis(2)).unwrap().iter().fold(soft, charge::apply);
        let c = retried.unwrap();
        assert_eq!((c.status, c.attempt), (ChargeStatus::Scheduled, 2));
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
