//! Every rule reads time from a `Clock`: the system's, or a test clock that is moved by hand.
use chrono::{DateTime, TimeZone, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A point in time, UTC.
pub type Timestamp = DateTime<Utc>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that stands still until moved; clones share one time.
#[derive(Debug, Clone)]
pub struct TestClock {
    millis: Arc<AtomicI64>,
}

impl TestClock {
    pub fn at(t: Timestamp) -> Self {
        TestClock { millis: Arc::new(AtomicI64::new(t.timestamp_millis())) }
    }

    /// Moves forward by `millis`; time never runs backwards, so negative steps are ignored.
    pub fn advance_millis(&self, millis: i64) -> Timestamp {
        let step = millis.max(0);
        let now = self.millis.fetch_add(step, Ordering::SeqCst) + step;
        from_millis(now)
    }

    /// Moves to `millis` if that is later than the current time (used to follow a shared clock).
    pub fn catch_up_to_millis(&self, millis: i64) -> Timestamp {
        let prev = self.millis.fetch_max(millis, Ordering::SeqCst);
        from_millis(prev.max(millis))
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch to a timestamp, saturating at the representable range.
pub fn from_millis(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The hour of day (0–23) `ms` falls in, in the IANA zone `zone` (Beijing time when the name
/// is empty or unknown).
pub fn local_hour(ms: i64, zone: &str) -> u32 {
    use chrono::Timelike;
    let tz = crate::cycle::zone(zone).unwrap_or(chrono_tz::Asia::Shanghai);
    from_millis(ms).with_timezone(&tz).hour()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hours_are_counted_in_the_zone() {
        // 2026-01-01T00:30:00Z
        let at = 1_767_227_400_000;
        assert_eq!(local_hour(at, "UTC"), 0);
        assert_eq!(local_hour(at, "Asia/Shanghai"), 8);
        assert_eq!(local_hour(at, ""), 8, "Beijing time by default");
        assert_eq!(local_hour(at, "America/New_York"), 19);
    }

    #[test]
    fn test_clock_moves_only_forward() {
        let c = TestClock::at(from_millis(1_000));
        assert_eq!(c.advance_millis(500).timestamp_millis(), 1_500);
        assert_eq!(c.advance_millis(-10_000).timestamp_millis(), 1_500);
        assert_eq!(c.catch_up_to_millis(1_200).timestamp_millis(), 1_500);
        assert_eq!(c.catch_up_to_millis(9_000).timestamp_millis(), 9_000);
        let shared = c.clone();
        c.advance_millis(1);
        assert_eq!(shared.now().timestamp_millis(), 9_001);
    }
}
