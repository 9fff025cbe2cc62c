//! The hours of the day in which the platform notifies payers and charges them on its own
//! initiative: by default 07:00–22:00 Beijing time, WeChat Pay's rule.
use crate::clock::Timestamp;
use chrono::{Days, NaiveTime, Timelike, Utc};

/// When the window opens and closes by default, in minutes after local midnight, and where.
pub const DEFAULT_OPENS: u32 = 7 * 60;
pub const DEFAULT_CLOSES: u32 = 22 * 60;
pub const DEFAULT_ZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    /// Minutes after local midnight the window opens and closes; `close` 1440 is midnight.
    open: u32,
    close: u32,
    zone: chrono_tz::Tz,
}

impl Default for DailyWindow {
    fn default() -> Self {
        DailyWindow { open: DEFAULT_OPENS, close: DEFAULT_CLOSES, zone: DEFAULT_ZONE }
    }
}

fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl DailyWindow {
    /// `HH:MM-HH:MM` in `zone`, e.g. `07:00-22:00`; `00:00-24:00` is always open.
    pub fn parse(s: &str, zone: chrono_tz::Tz) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected HH:MM-HH:MM with the opening before the closing, e.g. 07:00-22:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (open, close) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if open >= close {
            return Err(bad());
        }
        Ok(DailyWindow { open, close, zone })
    }

    pub fn always() -> Self {
        DailyWindow { open: 0, close: 24 * 60, zone: DEFAULT_ZONE }
    }

    fn minute_of(&self, t: Timestamp) -> u32 {
        let local = t.with_timezone(&self.zone);
        local.hour() * 60 + local.minute()
    }

    pub fn is_open(&self, t: Timestamp) -> bool {
        let m = self.minute_of(t);
        self.open <= m && m < self.close
    }

    /// `t` if the window is open then, else when it next opens.
    pub fn next_open(&self, t: Timestamp) -> Timestamp {
        if self.is_open(t) {
            return t;
        }
        let local = t.with_timezone(&self.zone);
        let day = if self.minute_of(t) < self.open { local.date_naive() } else { local.date_naive() + Days::new(1) };
        let at = NaiveTime::from_hms_opt(self.open / 60, self.open % 60, 0).unwrap_or_default();
        match day.and_time(at).and_local_timezone(self.zone).earliest() {
            Some(open) => open.with_timezone(&Utc),
            // A daylight-saving gap swallowed the opening minute: an hour later exists.
            None => t + chrono::Duration::hours(1),
        }
    }
}

impl std::fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} {}",
            self.open / 60,
            self.open % 60,
            self.close / 60,
            self.close % 60,
            self.zone
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn bj(h: u32, m: u32) -> Timestamp {
        chrono_tz::Asia::Shanghai.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn beijing_daytime_by_default() {
        let w = DailyWindow::default();
        assert!(!w.is_open(bj(6, 59)));
        assert!(w.is_open(bj(7, 0)));
        assert!(w.is_open(bj(21, 59)));
        assert!(!w.is_open(bj(22, 0)));
        assert_eq!(w.next_open(bj(3, 0)), bj(7, 0));
        assert_eq!(w.next_open(bj(12, 0)), bj(12, 0));
        assert_eq!(w.next_open(bj(23, 0)), bj(7, 0) + chrono::Duration::days(1));
    }

    #[test]
    fn parses_and_refuses() {
        let w = DailyWindow::parse("00:00-24:00", chrono_tz::Asia::Shanghai).unwrap();
        assert!(w.is_open(bj(0, 0)) && w.is_open(bj(23, 59)));
        assert_eq!(w, DailyWindow::always());
        assert!(DailyWindow::parse("22:00-07:00", chrono_tz::Asia::Shanghai).is_err());
        assert!(DailyWindow::parse("7-22", chrono_tz::Asia::Shanghai).is_err());
        assert_eq!(DailyWindow::default().to_string(), "07:00-22:00 Asia/Shanghai");
    }
}
