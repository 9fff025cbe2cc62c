//! Working days: Monday to Friday, less public holidays, plus the weekend days worked in
//! exchange for them ("make-up working days"). China's calendar ships as data
//! (`data/cn-working-calendar.txt`); another file of the same form may replace it.
use chrono::{Datelike, NaiveDate, Weekday};
use std::collections::{BTreeSet, HashSet};

/// China's public holidays and make-up working days as shipped.
pub const CHINA: &str = include_str!("../data/cn-working-calendar.txt");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    rest: HashSet<NaiveDate>,
    work: HashSet<NaiveDate>,
    /// The years the data covers (`year` lines).
    years: BTreeSet<i32>,
}

/// A line of a calendar file that cannot be read: its number (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CalendarError {
    pub line: usize,
    pub problem: String,
}

impl WorkingCalendar {
    /// China's, as shipped.
    pub fn china() -> Self {
        Self::parse(CHINA).expect("the shipped calendar parses")
    }

    /// Weekends only, no holidays.
    pub fn weekends_only() -> Self {
        WorkingCalendar { rest: HashSet::new(), work: HashSet::new(), years: BTreeSet::new() }
    }

    /// Reads `year YYYY`, `rest FIRST [LAST]` and `work DAY` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let mut c = Self::weekends_only();
        for (i, raw) in text.lines().enumerate() {
            let err = |problem: String| CalendarError { line: i + 1, problem };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let day = |s: &str| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| err(format!("{s:?} is not a date (YYYY-MM-DD)")))
            };
            match words.as_slice() {
                ["year", y] => {
                    c.years.insert(y.parse().map_err(|_| err(format!("{y:?} is not a year")))?);
                }
                ["rest", first] => {
                    c.rest.insert(day(first)?);
                }
                ["rest", first, last] => {
                    let (first, last) = (day(first)?, day(last)?);
                    if last < first || (last - first).num_days() > 31 {
                        return Err(err("a rest period runs forward and lasts at most a month".into()));
                    }
                    c.rest.extend(first.iter_days().take_while(|d| *d <= last));
                }
                ["work", d] => {
                    let d = day(d)?;
                    if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
                        return Err(err(format!("{d} is a weekday; only a weekend day is worked in exchange")));
                    }
                    c.work.insert(d);
                }
                _ => return Err(err(format!("expected `year Y`, `rest FIRST [LAST]` or `work DAY`, not {line:?}"))),
            }
        }
        if let Some(d) = c.rest.intersection(&c.work).next() {
            return Err(CalendarError { line: 0, problem: format!("{d} is both a rest day and a working day") });
        }
        Ok(c)
    }

    /// The years the data lists holidays for; other years have weekends only.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        if self.work.contains(&d) {
            return true;
        }
        !self.rest.contains(&d) && !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
    }

    /// The `n`th working day after `d` (`d` itself when `n` is 0).
    pub fn add_working_days(&self, d: NaiveDate, n: u32) -> NaiveDate {
        let mut at = d;
        let mut left = n;
        while left > 0 {
            at = at.succ_opt().expect("a date within chrono's range");
            if self.is_working_day(at) {
                left -= 1;
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_spring_festival_of_2026_and_its_make_up_days() {
        let c = WorkingCalendar::china();
        assert!(c.is_working_day(d("2026-02-14")), "a Saturday worked in exchange");
        assert!(!c.is_working_day(d("2026-02-16")), "a Monday of the festival");
        assert!(c.is_working_day(d("2026-02-24")));
        // Friday 13 February + 1 working day: Saturday the 14th is worked.
        assert_eq!(c.add_working_days(d("2026-02-13"), 1), d("2026-02-14"));
        // Saturday 14 February + 1: the festival runs to Monday the 23rd.
        assert_eq!(c.add_working_days(d("2026-02-14"), 1), d("2026-02-24"));
        // National Day: Wednesday 30 September + 3 → 8 Oct (Thu), 9 (Fri), 10 (Sat, worked).
        assert_eq!(c.add_working_days(d("2026-09-30"), 3), d("2026-10-10"));
        assert_eq!(c.years().collect::<Vec<_>>(), vec![2026]);
    }

    #[test]
    fn weekends_alone_outside_the_data() {
        let c = WorkingCalendar::china();
        assert_eq!(c.add_working_days(d("2025-12-05"), 1), d("2025-12-08"), "Friday to Monday");
        assert_eq!(c.add_working_days(d("2025-12-05"), 0), d("2025-12-05"));
        assert!(WorkingCalendar::weekends_only().is_working_day(d("2026-10-01")));
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(WorkingCalendar::parse("year 2026\nrest 2026-13-01").unwrap_err().line, 2);
        assert_eq!(WorkingCalendar::parse("work 2026-02-16").unwrap_err().line, 1, "a Monday");
        assert_eq!(WorkingCalendar::parse("\n\nholiday 2026-01-01").unwrap_err().line, 3);
        assert!(WorkingCalendar::parse("rest 2026-02-10 2026-02-01").is_err());
        assert!(WorkingCalendar::parse("rest 2026-02-14\nwork 2026-02-14").is_err());
    }
}
