//! When a change of a contract's terms (amount, cycle) takes effect on its cycle charges.
//!
//! A change splits the contract's periods in two: up to and including one period, charges
//! keep the old terms; after it, the new ones. That period is the latest of
//!
//! - what the plan's rule says: at once (`Immediately`), the last period already charged; from
//!   the next cycle (`NextCycle`), the period due next, which still bills the cycle under way;
//! - the period already announced by a pre-debit notice: it goes out as announced (WeChat Pay
//!   refuses a second notice with other figures for the same deduction);
//! - the last period due by the change's `effective_at`.
//!
//! A cycle change re-anchors the calendar on that last old period's due time: monthly to
//! quarterly after a charge on 31 March is due next on 30 June; monthly to weekly, a week
//! after the last monthly charge, and never for weeks already behind (no burst of
//! catch-up charges). Calendars count in the merchant's time zone.
use crate::clock::Timestamp;
use crate::cycle::Cycle;
use crate::money::Money;
use crate::plan::ModificationRule;
use chrono::TimeZone;

/// A fixed-cycle calendar: period `n` falls due `n - anchor_period` cycles after `anchor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub cycle: Cycle,
    pub anchor: Timestamp,
    pub anchor_period: u32,
}

impl Calendar {
    /// When period `n` falls due; `None` before the anchor's period or past the calendar's end.
    pub fn due<Z: TimeZone>(&self, n: u32, tz: &Z) -> Option<Timestamp> {
        self.cycle.due_at(self.anchor, n.checked_sub(self.anchor_period)?, tz)
    }

    /// The last period due at or before `t`, counting on from `from` (taken as due by then).
    pub fn last_due_by<Z: TimeZone>(&self, from: u32, t: Timestamp, tz: &Z) -> u32 {
        let mut n = from.max(self.anchor_period);
        while let Some(next) = n.checked_add(1).filter(|m| self.due(*m, tz).is_some_and(|d| d <= t)) {
            n = next;
        }
        n
    }
}

/// The calendar in force at `now` from a contract's cycle history: the signing's time and
/// cycle, then each cycle change's effective time and new cycle, each re-anchoring on the
/// last period due by the time it took effect (a change not yet in effect does not count).
/// `None` for an empty history or past the calendar's end.
pub fn calendar<Z: TimeZone>(history: &[(Timestamp, Cycle)], now: Timestamp, tz: &Z) -> Option<Calendar> {
    let (&(signed_at, cycle), changes) = history.split_first()?;
    let mut calendar = Calendar { cycle, anchor: signed_at, anchor_period: 0 };
    for &(at, cycle) in changes.iter().take_while(|(at, _)| *at <= now) {
        let last = calendar.last_due_by(calendar.anchor_period, at, tz);
        calendar = Calendar { cycle, anchor: calendar.due(last, tz)?, anchor_period: last };
    }
    Some(calendar)
}

/// Where a schedule's fixed side stands when its terms change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The period the next charge is for.
    pub next_period: u32,
    /// Whether that charge's pre-debit notice has gone out.
    pub announced: bool,
}

/// The last period charged on the old terms (see the module's rules). Periods after it take
/// the new terms; when it is before `position.next_period`, the change applies at once.
pub fn last_on_old_terms<Z: TimeZone>(
    rule: ModificationRule,
    calendar: &Calendar,
    position: Position,
    effective_at: Timestamp,
    tz: &Z,
) -> u32 {
    let next = position.next_period;
    let committed = if position.announced { next } else { next.saturating_sub(1) };
    let by_rule = match rule {
        ModificationRule::Immediately => committed,
        ModificationRule::NextCycle => committed.max(next),
    };
    by_rule.max(calendar.last_due_by(next.saturating_sub(1), effective_at, tz))
}

/// The calendar a cycle change leaves, once period `last_old` (the last on the old terms) is
/// behind: anchored on that period's due time, and the next period — no earlier than
/// `next_period` — the first of the new calendar due no earlier than `not_before`. Returns the
/// calendar, the next period and its due time; `None` past the calendar's end.
pub fn rebase<Z: TimeZone>(
    old: &Calendar,
    cycle: Cycle,
    last_old: u32,
    next_period: u32,
    not_before: Timestamp,
    tz: &Z,
) -> Option<(Calendar, u32, Timestamp)> {
    let calendar = if cycle == old.cycle {
        *old
    } else {
        Calendar { cycle, anchor: old.due(last_old, tz)?, anchor_period: last_old }
    };
    let mut n = next_period.max(last_old.checked_add(1)?);
    let mut due = calendar.due(n, tz)?;
    while due < not_before {
        n = n.checked_add(1)?;
        due = calendar.due(n, tz)?;
    }
    Some((calendar, n, due))
}

/// When a change made at `now` takes effect, as the payer is told: at once, or when the
/// contract's next charge falls due (that charge still bills the cycle under way, on the old
/// terms).
pub fn effective_at<Z: TimeZone>(rule: ModificationRule, calendar: &Calendar, now: Timestamp, tz: &Z) -> Timestamp {
    match rule {
        ModificationRule::Immediately => now,
        ModificationRule::NextCycle => {
            let last = calendar.last_due_by(calendar.anchor_period, now, tz);
            last.checked_add(1).and_then(|n| calendar.due(n, tz)).unwrap_or(now)
        }
    }
}

/// The payer's notice of a change from `old` to `new` (amount, cycle), its date in the
/// merchant's zone.
pub fn notice<Z: TimeZone>(
    rule: ModificationRule,
    effective_at: Timestamp,
    new: (Money, Cycle),
    old: (Money, Cycle),
    tz: &Z,
) -> String
where
    Z::Offset: std::fmt::Display,
{
    let date = effective_at.with_timezone(tz).format("%Y-%m-%d");
    let terms = format!("{}扣款 {}（原为{}扣款 {}）", new.1.label(false), new.0, old.1.label(false), old.0);
    match rule {
        ModificationRule::Immediately => format!(
            "您的自动扣费协议自 {date} 起调整为{terms}；已提前通知您的扣款仍按通知的金额扣款。如不同意，可随时解约。"
        ),
        ModificationRule::NextCycle => format!(
            "您的自动扣费协议将调整为{terms}：{date} 的本期扣款仍按原条款，此后按新条款扣款。如不同意，可随时解约。"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(y: i32, m: u32, d: u32) -> Timestamp {
        Utc.with_ymd_and_hms(y, m, d, 2, 0, 0).unwrap()
    }

    fn monthly() -> Calendar {
        Calendar { cycle: Cycle::Monthly, anchor: at(2026, 1, 31), anchor_period: 0 }
    }

    #[test]
    fn the_rule_decides_which_period_keeps_the_old_terms() {
        let tz = crate::cycle::beijing();
        let cal = monthly();
        // Periods 1 and 2 charged (28 Feb, 31 Mar); period 3 due 30 Apr, not yet announced.
        let p = Position { next_period: 3, announced: false };
        let now = at(2026, 4, 10);
        assert_eq!(last_on_old_terms(ModificationRule::Immediately, &cal, p, now, &tz), 2);
        assert_eq!(last_on_old_terms(ModificationRule::NextCycle, &cal, p, now, &tz), 3);
        // Announced: period 3 goes out as announced, whatever the rule.
        let announced = Position { announced: true, ..p };
        assert_eq!(last_on_old_terms(ModificationRule::Immediately, &cal, announced, now, &tz), 3);
        // An effective time in the future holds the old terms through the periods due by then.
        assert_eq!(last_on_old_terms(ModificationRule::Immediately, &cal, p, at(2026, 6, 1), &tz), 4);
    }

    #[test]
    fn a_cycle_change_reanchors_on_the_last_old_period() {
        let tz = crate::cycle::beijing();
        let cal = monthly();
        // Monthly to quarterly after period 2 (31 March): next due 30 June, not a year on.
        let (q, n, due) = rebase(&cal, Cycle::Quarterly, 2, 3, at(2026, 4, 10), &tz).unwrap();
        assert_eq!((n, due), (3, at(2026, 6, 30)));
        assert_eq!(q.due(4, &tz), Some(at(2026, 9, 30)));
        // Monthly to weekly three weeks after the last charge: the weeks behind are not caught
        // up; the first week due from now on is next.
        let (_, n, due) = rebase(&cal, Cycle::Weekly, 2, 3, at(2026, 4, 20), &tz).unwrap();
        assert_eq!((n, due), (5, at(2026, 4, 21)));
        // The same cycle keeps the calendar.
        let (same, n, due) = rebase(&cal, Cycle::Monthly, 2, 3, at(2026, 4, 10), &tz).unwrap();
        assert_eq!((same, n, due), (cal, 3, at(2026, 4, 30)));
    }

    #[test]
    fn a_contracts_history_rebuilds_its_calendar() {
        let tz = crate::cycle::beijing();
        // Monthly from 31 January; quarterly from the charge of 31 March (period 2) on.
        let history = [(at(2026, 1, 31), Cycle::Monthly), (at(2026, 3, 31), Cycle::Quarterly)];
        let cal = calendar(&history, at(2026, 5, 1), &tz).unwrap();
        assert_eq!((cal.anchor, cal.anchor_period), (at(2026, 3, 31), 2));
        assert_eq!(cal.due(3, &tz), Some(at(2026, 6, 30)));
        // From the next cycle after that: the next due date is 30 June, not 31 May.
        let next = effective_at(ModificationRule::NextCycle, &cal, at(2026, 5, 1), &tz);
        assert_eq!(next, at(2026, 6, 30));
        // Before the change took effect, the monthly calendar still holds.
        assert_eq!(calendar(&history, at(2026, 3, 10), &tz), Some(monthly()));
        assert_eq!(calendar(&history[..1], at(2026, 5, 1), &tz), Some(monthly()));
    }

    #[test]
    fn the_payer_is_told_the_date_in_the_merchants_zone() {
        let london: chrono_tz::Tz = "Europe/London".parse().unwrap();
        // Signed 23:30 on 31 January, London time: next due 23:30 on 28 February in London,
        // which is already 1 March in Beijing.
        let cal = Calendar {
            cycle: Cycle::Monthly,
            anchor: Utc.with_ymd_and_hms(2026, 1, 31, 23, 30, 0).unwrap(),
            anchor_period: 0,
        };
        let now = Utc.with_ymd_and_hms(2026, 2, 10, 12, 0, 0).unwrap();
        let at = effective_at(ModificationRule::NextCycle, &cal, now, &london);
        assert_eq!(at, Utc.with_ymd_and_hms(2026, 2, 28, 23, 30, 0).unwrap());
        assert_eq!(effective_at(ModificationRule::Immediately, &cal, now, &london), now);
        let new = (Money::cny(2_990), Cycle::Monthly);
        let old = (Money::cny(1_990), Cycle::Monthly);
        let text = notice(ModificationRule::NextCycle, at, new, old, &london);
        assert!(text.contains("2026-02-28 的本期扣款仍按原条款"), "{text}");
        assert!(text.contains("每月扣款 29.90 CNY（原为每月扣款 19.90 CNY）"), "{text}");
        let beijing = notice(ModificationRule::NextCycle, at, new, old, &crate::cycle::beijing());
        assert!(beijing.contains("2026-03-01"), "{beijing}");
    }

    #[test]
    fn months_are_the_merchants() {
        // 23:30 on 31 January in London is already 1 February in Beijing.
        let london: chrono_tz::Tz = "Europe/London".parse().unwrap();
        let cal = Calendar {
            cycle: Cycle::Monthly,
            anchor: Utc.with_ymd_and_hms(2026, 1, 31, 23, 30, 0).unwrap(),
            anchor_period: 0,
        };
        assert_eq!(cal.due(1, &london), Some(Utc.with_ymd_and_hms(2026, 2, 28, 23, 30, 0).unwrap()));
        assert_eq!(cal.last_due_by(0, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(), &london), 1);
    }
}
