//! When a failed delivery is tried again.
//!
//! After the first try, a delivery that has not succeeded is tried again after each delay of
//! [`SCHEDULE`] in turn, each stretched or shrunk by up to 20 % so that many deliveries failing
//! together do not all come back at once. The delays add up to about 4.6 days, and to more than
//! 3 days however the jitter falls, so an endpoint that is down for less than
//! [`DISABLE_AFTER`] still receives every delivery.

use std::time::Duration;

const SECOND: u64 = 1;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// The delays before the retries, without jitter: the Standard Webhooks example schedule, with
/// one more day at the end so that the retries outlast [`DISABLE_AFTER`] even at −20 %.
pub const SCHEDULE: [Duration; 11] = [
    Duration::from_secs(5 * SECOND),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(14 * HOUR),
    Duration::from_secs(20 * HOUR),
    Duration::from_secs(24 * HOUR),
    Duration::from_secs(24 * HOUR),
];

/// The most tries of one delivery: the first and one per delay of [`SCHEDULE`].
pub const MAX_ATTEMPTS: u32 = SCHEDULE.len() as u32 + 1;

/// An endpoint whose every delivery has failed for this long (3 days) is disabled by the
/// caller.
pub const DISABLE_AFTER: Duration = Duration::from_secs(3 * 24 * HOUR);

/// The jitter's range in millionths on each side of the nominal delay (20 %).
const JITTER_MILLIONTHS: u64 = 200_000;

/// The wait before the next try of a delivery that has been tried `attempts_made` times and
/// has not succeeded: none before the first try, then the delays of [`SCHEDULE`] with ±20 %
/// jitter, and `None` once [`MAX_ATTEMPTS`] tries have been made (the delivery is given up).
///
/// The jitter is a pure function of `random` (any value, such as a hash of the delivery id and
/// the try number; nearby values give unrelated jitter), so a schedule can be recomputed.
pub fn next_delay(attempts_made: u32, random: u64) -> Option<Duration> {
    if attempts_made == 0 {
        return Some(Duration::ZERO);
    }
    let nominal = *SCHEDULE.get(attempts_made as usize - 1)?;
    Some(jittered(nominal, mix(random) % (2 * JITTER_MILLIONTHS + 1)))
}

/// `nominal` scaled by `(0.8 + offset / 1_000_000)`, to the millisecond; `offset` is at most
/// 400_000.
fn jittered(nominal: Duration, offset: u64) -> Duration {
    let nominal_ms = nominal.as_millis() as u64;
    let factor = 1_000_000 - JITTER_MILLIONTHS + offset;
    Duration::from_millis(nominal_ms * factor / 1_000_000)
}

/// SplitMix64's finaliser: spreads any input over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LOWEST: u64 = 0;
    const HIGHEST: u64 = 2 * JITTER_MILLIONTHS;

    #[test]
    fn the_schedule_without_jitter_is_monotone_and_as_documented() {
        assert!(SCHEDULE.windows(2).all(|w| w[0] <= w[1]), "{SCHEDULE:?}");
        let total: Duration = SCHEDULE.iter().sum();
        assert_eq!(total, Duration::from_secs(109 * HOUR + 35 * MINUTE + 5));
        assert_eq!(SCHEDULE[0], Duration::from_secs(5));
        assert_eq!(MAX_ATTEMPTS, 12);
        // The middle of the jitter range is the nominal delay.
        for d in SCHEDULE {
            assert_eq!(jittered(d, JITTER_MILLIONTHS), d);
        }
    }

    #[test]
    fn retries_outlast_the_disabling_period_even_at_the_shortest_jitter() {
        let shortest: Duration = SCHEDULE.iter().map(|&d| jittered(d, LOWEST)).sum();
        assert!(shortest >= DISABLE_AFTER, "{shortest:?}");
        // Four fifths of the nominal total, to the millisecond.
        assert_eq!(shortest, Duration::from_millis((109 * HOUR + 35 * MINUTE + 5) * 1000 * 4 / 5));
        assert_eq!(DISABLE_AFTER, Duration::from_secs(72 * HOUR));
    }

    #[test]
    fn the_jitter_ends_are_exactly_20_percent() {
        assert_eq!(jittered(Duration::from_secs(5), LOWEST), Duration::from_secs(4));
        assert_eq!(jittered(Duration::from_secs(5), HIGHEST), Duration::from_secs(6));
        assert_eq!(jittered(Duration::from_secs(24 * HOUR), LOWEST), Duration::from_secs(24 * HOUR * 4 / 5));
        assert_eq!(jittered(Duration::from_secs(24 * HOUR), HIGHEST), Duration::from_secs(24 * HOUR * 6 / 5));
    }

    #[test]
    fn before_the_first_try_there_is_no_wait_and_after_the_last_there_is_no_try() {
        assert_eq!(next_delay(0, 12345), Some(Duration::ZERO));
        assert!(next_delay(MAX_ATTEMPTS - 1, 7).is_some());
        assert_eq!(next_delay(MAX_ATTEMPTS, 7), None);
        assert_eq!(next_delay(u32::MAX, 7), None);
    }

    #[test]
    fn nearby_random_values_give_spread_out_jitter() {
        // Consecutive inputs (a caller's counter, say) still cover the whole range.
        let factors: Vec<f64> =
            (0..1000u64).map(|r| next_delay(10, r).unwrap().as_secs_f64() / SCHEDULE[9].as_secs_f64()).collect();
        let mean = factors.iter().sum::<f64>() / factors.len() as f64;
        assert!((0.98..=1.02).contains(&mean), "mean factor {mean}");
        assert!(factors.iter().any(|&f| f < 0.84), "some near the low end");
        assert!(factors.iter().any(|&f| f > 1.16), "some near the high end");
    }

    proptest! {
        #[test]
        fn every_delay_lies_within_20_percent_and_is_deterministic(attempts in 1..MAX_ATTEMPTS, random: u64) {
            let nominal = SCHEDULE[attempts as usize - 1];
            let d = next_delay(attempts, random).unwrap();
            prop_assert!(d >= nominal * 4 / 5, "{d:?} < 0.8 × {nominal:?}");
            prop_assert!(d <= nominal * 6 / 5, "{d:?} > 1.2 × {nominal:?}");
            prop_assert_eq!(next_delay(attempts, random), Some(d));
        }

        #[test]
        fn any_run_of_retries_lasts_at_least_the_disabling_period(randoms in proptest::collection::vec(any::<u64>(), 11)) {
            let total: Duration = (1..MAX_ATTEMPTS).map(|n| next_delay(n, randoms[n as usize - 1]).unwrap()).sum();
            prop_assert!(total >= DISABLE_AFTER, "{total:?}");
            prop_assert!(total <= SCHEDULE.iter().sum::<Duration>() * 6 / 5);
        }
    }
}
