//! Fixed billing cycles and when each period falls due.
use crate::clock::Timestamp;
use chrono::{Days, FixedOffset, Months, TimeZone, Utc};

/// The time zone merchants bill in unless they name another.
pub const DEFAULT_ZONE: &str = "Asia/Shanghai";

/// An IANA time zone by name (`Asia/Shanghai`, `Europe/London`); empty means the default.
pub fn zone(name: &str) -> Result<chrono_tz::Tz, String> {
    let name = if name.is_empty() { DEFAULT_ZONE } else { name };
    name.parse::<chrono_tz::Tz>().map_err(|_| format!("{name:?} is not an IANA time zone such as Asia/Shanghai"))
}

/// How often a fixed-cycle contract is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cycle {
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
}

/// The calendar merchants bill in unless configured otherwise: Beijing time, UTC+8 all year
/// (China has kept no daylight saving time since 1991, so a fixed offset is exact).
pub fn beijing() -> FixedOffset {
    // 8 hours is inside the ±24 h range FixedOffset accepts.
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

impl Cycle {
    /// When period `n` (1 = the first full cycle after the anchor) falls due.
    ///
    /// Counted from the anchor every time, never from the previous due date, so a month-end
    /// anchor clamps and recovers: 31 Jan → 28/29 Feb → 31 Mar. The calendar is `tz`'s.
    /// A local time that a daylight-saving change skips is taken an hour later; one that
    /// occurs twice, at its first occurrence.
    pub fn due_at<Z: TimeZone>(&self, anchor: Timestamp, n: u32, tz: &Z) -> Option<Timestamp> {
        let local = anchor.with_timezone(tz).naive_local();
        let due = match self {
            Cycle::Daily => local.checked_add_days(Days::new(u64::from(n))),
            Cycle::Weekly => local.checked_add_days(Days::new(7 * u64::from(n))),
            Cycle::Monthly => local.checked_add_months(Months::new(n)),
            Cycle::Quarterly => local.checked_add_months(Months::new(n.checked_mul(3)?)),
            Cycle::Yearly => local.checked_add_months(Months::new(n.checked_mul(12)?)),
        }?;
        let local = due
            .and_local_timezone(tz.clone())
            .earliest()
            .or_else(|| (due + chrono::Duration::hours(1)).and_local_timezone(tz.clone()).earliest())?;
        Some(local.with_timezone(&Utc))
    }

    /// What payers read: "每月" in Chinese (`en` false), "Monthly" in English.
    pub fn label(&self, en: bool) -> &'static str {
        match (self, en) {
            (Cycle::Daily, false) => "每日",
            (Cycle::Weekly, false) => "每周",
            (Cycle::Monthly, false) => "每月",
            (Cycle::Quarterly, false) => "每季度",
            (Cycle::Yearly, false) => "每年",
            (Cycle::Daily, true) => "Daily",
            (Cycle::Weekly, true) => "Weekly",
            (Cycle::Monthly, true) => "Monthly",
            (Cycle::Quarterly, true) => "Quarterly",
            (Cycle::Yearly, true) => "Yearly",
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Cycle::Daily => "daily",
            Cycle::Weekly => "weekly",
            Cycle::Monthly => "monthly",
            Cycle::Quarterly => "quarterly",
            Cycle::Yearly => "yearly",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn bj(y: i32, m: u32, d: u32) -> Timestamp {
        beijing().with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_end_anchor_clamps_and_recovers() {
        let anchor = bj(2025, 1, 31);
        let tz = beijing();
        assert_eq!(Cycle::Monthly.due_at(anchor, 1, &tz), Some(bj(2025, 2, 28)));
        assert_eq!(Cycle::Monthly.due_at(anchor, 2, &tz), Some(bj(2025, 3, 31)));
        assert_eq!(Cycle::Monthly.due_at(bj(2024, 1, 31), 1, &tz), Some(bj(2024, 2, 29)));
        assert_eq!(Cycle::Quarterly.due_at(bj(2024, 11, 30), 1, &tz), Some(bj(2025, 2, 28)));
        assert_eq!(Cycle::Yearly.due_at(bj(2024, 2, 29), 1, &tz), Some(bj(2025, 2, 28)));
    }

    #[test]
    fn beijing_calendar_decides_the_day() {
        // 23:30 UTC on 31 Jan is already 1 Feb in Beijing, so a month later is 1 Mar there.
        let anchor = Utc.with_ymd_and_hms(2025, 1, 31, 23, 30, 0).unwrap();
        let due = Cycle::Monthly.due_at(anchor, 1, &beijing()).unwrap();
        assert_eq!(due, Utc.with_ymd_and_hms(2025, 2, 28, 23, 30, 0).unwrap());
    }

    #[test]
    fn short_cycles() {
        let a = bj(2025, 3, 1);
        assert_eq!(Cycle::Daily.due_at(a, 2, &beijing()), Some(bj(2025, 3, 3)));
        assert_eq!(Cycle::Weekly.due_at(a, 1, &beijing()), Some(bj(2025, 3, 8)));
    }

    #[test]
    fn merchant_zones_keep_local_time_across_daylight_saving() {
        let london = zone("Europe/London").unwrap();
        // 09:00 in London on 15 March (GMT) and a month later (BST) is 09:00 local both times.
        let anchor = Utc.with_ymd_and_hms(2025, 3, 15, 9, 0, 0).unwrap();
        assert_eq!(
            Cycle::Monthly.due_at(anchor, 1, &london),
            Some(Utc.with_ymd_and_hms(2025, 4, 15, 8, 0, 0).unwrap())
        );
        // 01:30 on 30 March 2025 does not exist in London; the charge falls an hour later.
        let skipped = Utc.with_ymd_and_hms(2025, 2, 28, 1, 30, 0).unwrap();
        assert_eq!(
            Cycle::Daily.due_at(skipped, 30, &london),
            Some(Utc.with_ymd_and_hms(2025, 3, 30, 1, 30, 0).unwrap())
        );
        assert_eq!(zone("").unwrap(), chrono_tz::Asia::Shanghai);
        assert!(zone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
