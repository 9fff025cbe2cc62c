//! What a schedule calls for at a given moment: pure, so every rule here is tested without a
//! database. A schedule has up to two sides:
//!
//! - the **fixed** side (fixed-cycle and hybrid plans): period `n` falls due `n` cycles after
//!   the anchor; its pre-debit notice goes out the plan's lead time before, and the charge goes
//!   no sooner than the due time and no sooner than the lead time after the notice went out
//!   (a late notice, say after an outage, delays its charge). Period 0, the charge at signing,
//!   needs no notice: the payer confirmed it moments before.
//! - the **usage** side (usage and hybrid plans): usage period `u` runs from `u - 1` to `u`
//!   usage cycles after the anchor and closes its grace window later. Its notice goes out the
//!   lead time before the close, with the usage so far as the estimate; once closed and
//!   noticed, one charge bills the period's total. A period with nothing to bill is passed
//!   over without notice or charge; one whose usage arrived after the notice time is noticed
//!   at the close and charged the lead time after.
//!
//! Two paces. On the system clock a step is taken when its moment has passed, at the moment
//! the loop takes it: a notice the platform sends late (after an outage) is late, and its
//! charge waits the lead time after it. On a test clock, moving the clock *simulates* the
//! time in between: each step is taken at its own moment (moved into the charge window), so
//! advancing the clock by a year runs a year of billing, notices a day before each charge.
use crate::store::{Mode, ScheduleRow, cycle_from_str};
use autodebit_domain::clock::from_millis;
use autodebit_domain::modification;
use autodebit_domain::window::DailyWindow;

/// How steps whose moment has passed are taken.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// At `now` (the due loop runs only while the window is open).
    Real,
    /// At their own moment, moved into the window.
    Simulated(DailyWindow),
}

impl Pace {
    /// When a step scheduled for `at` is taken, if it is taken by `now`; else `Err(wake)`, the
    /// moment to look again.
    fn take(self, at: i64, now: i64) -> Result<i64, i64> {
        let at = match self {
            Pace::Real => return if at <= now { Ok(now) } else { Err(at) },
            Pace::Simulated(w) => w.next_open(from_millis(at)).timestamp_millis(),
        };
        if at <= now { Ok(at) } else { Err(at) }
    }
}

/// Where a charge comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Cycle,
    Usage,
}

/// `at_ms` is when the step is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Notice {
        side: Side,
        period: u32,
        estimated: i64,
        charge_due_ms: i64,
        at_ms: i64,
    },
    /// `quantity` is the usage billed (0 for cycle charges).
    Charge {
        side: Side,
        period: u32,
        amount: i64,
        due_ms: i64,
        quantity: u64,
        at_ms: i64,
    },
}

/// How many steps one side may take in one call: a schedule far behind catches up over
/// several passes of the due loop instead of holding one transaction.
const MAX_STEPS: usize = 64;

/// Advances `row` to `now_ms`: returns what is due now, in order, and leaves the row at its
/// next state (periods, notices, `wake_ms`, `active`). `quantity(period)` is the usage
/// recorded in a usage period; `price` what a quantity costs (`None`: it cannot be priced,
/// and the charge is issued at `i64::MAX` for the limits to refuse, never dropped).
pub fn advance(
    row: &mut ScheduleRow,
    now_ms: i64,
    pace: Pace,
    quantity: impl Fn(i64) -> u64,
    price: impl Fn(u64) -> Option<i64>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let fixed_wake = if row.mode.fixed() { fixed(row, now_ms, pace, &mut steps) } else { None };
    let usage_wake = if row.mode.metered() { usage(row, now_ms, pace, &mut steps, &quantity, &price) } else { None };
    // Steps of the two sides interleave in time order (limits count per calendar day).
    steps.sort_by_key(|s| match s {
        Step::Notice { at_ms, .. } | Step::Charge { at_ms, .. } => *at_ms,
    });
    row.wake_ms = match (fixed_wake, usage_wake) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // Event-triggered schedules have no timer but stay active for TriggerCharge.
        (None, None) if row.mode == Mode::Event => i64::MAX,
        (None, None) => {
            row.active = false;
            i64::MAX
        }
    };
    steps
}

/// Puts the schedule's waiting change of terms into effect (`domain::modification`): the new
/// amount, and for a new cycle a calendar re-anchored on the last period on the old terms,
/// its next period the first due no earlier than `not_before_ms`. `None` when the calendar
/// has no such period.
pub fn apply_change(row: &mut ScheduleRow, not_before_ms: i64) -> Option<()> {
    let tz = row.zone();
    let old = row.calendar()?;
    let cycle = cycle_from_str(&row.change_cycle)?;
    let last_old = u32::try_from(row.change_through).ok()?;
    let not_before = old.due(last_old, &tz)?.timestamp_millis().max(not_before_ms);
    let next = u32::try_from(row.next_period).ok()?;
    let (calendar, period, due) = modification::rebase(&old, cycle, last_old, next, from_millis(not_before), &tz)?;
    row.amount = row.change_amount;
    row.cycle = cycle.as_str().to_string();
    row.cycle_anchor_ms = calendar.anchor.timestamp_millis();
    row.cycle_anchor_period = i64::from(calendar.anchor_period);
    row.next_period = i64::from(period);
    row.next_due_ms = due.timestamp_millis();
    row.change_through = -1;
    Some(())
}

/// The fixed side; returns when it next needs attention, `None` when it is done.
fn fixed(row: &mut ScheduleRow, now_ms: i64, pace: Pace, steps: &mut Vec<Step>) -> Option<i64> {
    let tz = row.zone();
    for _ in 0..MAX_STEPS {
        // A change of terms takes effect once its last period on the old terms is behind.
        if row.change_through >= 0 && row.next_period > row.change_through {
            apply_change(row, i64::MIN)?;
        }
        let calendar = row.calendar()?;
        let (period, due) = (u32::try_from(row.next_period).ok()?, row.next_due_ms);
        if row.expires_at_ms > 0 && due > row.expires_at_ms {
            return None;
        }
        let needs_notice = period > 0 && row.notice_lead_ms > 0;
        if needs_notice && row.noticed_period < row.next_period {
            let at = match pace.take(due - row.notice_lead_ms, now_ms) {
                Ok(at) => at,
                Err(wake) => return Some(wake),
            };
            steps.push(Step::Notice {
                side: Side::Cycle,
                period,
                estimated: row.amount,
                charge_due_ms: due,
                at_ms: at,
            });
            row.noticed_period = row.next_period;
            row.ready_ms = due.max(at + row.notice_lead_ms);
            continue;
        }
        let ready = if needs_notice { due.max(row.ready_ms) } else { due };
        let at = match pace.take(ready, now_ms) {
            Ok(at) => at,
            Err(wake) => return Some(wake),
        };
        steps.push(Step::Charge { side: Side::Cycle, period, amount: row.amount, due_ms: due, quantity: 0, at_ms: at });
        let next = period.checked_add(1)?;
        row.next_period = i64::from(next);
        row.next_due_ms = calendar.due(next, &tz)?.timestamp_millis();
    }
    Some(now_ms)
}

/// The usage side; returns when it next needs attention, `None` when it is done.
fn usage(
    row: &mut ScheduleRow,
    now_ms: i64,
    pace: Pace,
    steps: &mut Vec<Step>,
    quantity: &impl Fn(i64) -> u64,
    price: &impl Fn(u64) -> Option<i64>,
) -> Option<i64> {
    let cycle = cycle_from_str(&row.usage_cycle)?;
    let tz = row.zone();
    let anchor = from_millis(row.anchor_ms);
    for _ in 0..MAX_STEPS {
        let period = u32::try_from(row.usage_period).ok().filter(|p| *p > 0)?;
        if row.expires_at_ms > 0 {
            let start = cycle.due_at(anchor, period - 1, &tz)?.timestamp_millis();
            if start >= row.expires_at_ms {
                return None;
            }
        }
        let close = row.usage_end_ms + row.usage_grace_ms;
        let used = quantity(row.usage_period);
        let amount = if used == 0 { 0 } else { price(used).unwrap_or(i64::MAX) };
        if row.usage_noticed < row.usage_period {
            let notice_at = close - row.notice_lead_ms;
            if now_ms < notice_at {
                return Some(notice_at);
            }
            if amount > 0 {
                let at = match pace.take(notice_at, now_ms) {
                    Ok(at) => at,
                    Err(wake) => return Some(wake),
                };
                steps.push(Step::Notice {
                    side: Side::Usage,
                    period,
                    estimated: amount,
                    charge_due_ms: close,
                    at_ms: at,
                });
                row.usage_noticed = row.usage_period;
                row.usage_ready_ms = close.max(at + row.notice_lead_ms);
                continue;
            }
            if now_ms < close {
                return Some(close);
            }
            // Closed with nothing to bill: on to the next period.
        } else {
            let ready = close.max(row.usage_ready_ms);
            let at = match pace.take(ready, now_ms) {
                Ok(at) => at,
                Err(wake) => return Some(wake),
            };
            if amount > 0 {
                steps.push(Step::Charge {
                    side: Side::Usage,
                    period,
                    amount,
                    due_ms: close,
                    quantity: used,
                    at_ms: at,
                });
            }
        }
        let next = period.checked_add(1)?;
        row.usage_period = i64::from(next);
        row.usage_end_ms = cycle.due_at(anchor, next, &tz)?.timestamp_millis();
    }
    Some(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn row(mode: Mode) -> ScheduleRow {
        ScheduleRow {
            contract_id: "ct_1".into(),
            merchant_id: "mch_1".into(),
            payer_id: "p".into(),
            amount: 1_000,
            currency: "CNY".into(),
            cycle: "daily".into(),
            anchor_ms: 0,
            next_period: 1,
            next_due_ms: DAY,
            active: true,
            plan_id: String::new(),
            expires_at_ms: 0,
            total_succeeded: 0,
            first_success_ms: 0,
            mode,
            time_zone: "UTC".into(),
            notice_lead_ms: 2 * H,
            noticed_period: 0,
            ready_ms: 0,
            usage_cycle: "daily".into(),
            usage_grace_ms: H,
            usage_period: if mode.metered() { 1 } else { 0 },
            usage_end_ms: DAY,
            usage_noticed: 0,
            usage_ready_ms: 0,
            wake_ms: 0,
            day_key: String::new(),
            day_count: 0,
            day_amount: 0,
            rev: 0,
            cycle_anchor_ms: 0,
            cycle_anchor_period: 0,
            change_through: -1,
            change_amount: 0,
            change_cycle: String::new(),
        }
    }

    fn none(_: i64) -> u64 {
        0
    }

    fn per_unit(q: u64) -> Option<i64> {
        Some(q as i64 * 10)
    }

    #[test]
    fn a_cycle_charge_waits_for_its_notice() {
        let mut r = row(Mode::Fixed);
        assert!(advance(&mut r, DAY - 3 * H, Pace::Real, none, per_unit).is_empty());
        assert_eq!(r.wake_ms, DAY - 2 * H);
        let s = advance(&mut r, DAY - 2 * H, Pace::Real, none, per_unit);
        assert_eq!(
            s,
            vec![Step::Notice {
                side: Side::Cycle,
                period: 1,
                estimated: 1_000,
                charge_due_ms: DAY,
                at_ms: DAY - 2 * H
            }]
        );
        assert_eq!(r.wake_ms, DAY);
        let s = advance(&mut r, DAY, Pace::Real, none, per_unit);
        assert_eq!(
            s,
            vec![Step::Charge { side: Side::Cycle, period: 1, amount: 1_000, due_ms: DAY, quantity: 0, at_ms: DAY }]
        );
        assert_eq!((r.next_period, r.next_due_ms, r.wake_ms), (2, 2 * DAY, 2 * DAY - 2 * H));
    }

    #[test]
    fn a_late_notice_delays_its_charge_by_the_lead_time() {
        let mut r = row(Mode::Fixed);
        // The platform was down until an hour after the due time.
        let s = advance(&mut r, DAY + H, Pace::Real, none, per_unit);
        assert!(matches!(s[..], [Step::Notice { .. }]));
        assert_eq!(r.wake_ms, DAY + 3 * H);
        assert!(advance(&mut r, DAY + 2 * H, Pace::Real, none, per_unit).is_empty());
        assert_eq!(advance(&mut r, DAY + 3 * H, Pace::Real, none, per_unit).len(), 1);
    }

    #[test]
    fn usage_is_billed_after_the_grace_window_and_empty_periods_are_passed_over() {
        let mut r = row(Mode::Usage);
        // No usage in period 1: no notice, no charge; the period closes at DAY + 1 h.
        assert!(advance(&mut r, DAY - H, Pace::Real, none, per_unit).is_empty());
        assert_eq!(r.wake_ms, DAY + H);
        assert!(advance(&mut r, DAY + H, Pace::Real, none, per_unit).is_empty());
        assert_eq!((r.usage_period, r.usage_end_ms), (2, 2 * DAY));
        // 7 units in period 2: noticed two hours before the close, charged at it.
        let used = |p: i64| if p == 2 { 7 } else { 0 };
        let s = advance(&mut r, 2 * DAY - H, Pace::Real, used, per_unit);
        assert_eq!(
            s,
            vec![Step::Notice {
                side: Side::Usage,
                period: 2,
                estimated: 70,
                charge_due_ms: 2 * DAY + H,
                at_ms: 2 * DAY - H
            }]
        );
        let s = advance(&mut r, 2 * DAY + H, Pace::Real, used, per_unit);
        assert_eq!(
            s,
            vec![Step::Charge {
                side: Side::Usage,
                period: 2,
                amount: 70,
                due_ms: 2 * DAY + H,
                quantity: 7,
                at_ms: 2 * DAY + H
            }]
        );
        assert_eq!(r.usage_period, 3);
    }

    #[test]
    fn usage_arriving_after_the_notice_time_is_noticed_at_the_close() {
        let mut r = row(Mode::Usage);
        assert!(advance(&mut r, DAY - H, Pace::Real, none, per_unit).is_empty());
        let used = |p: i64| if p == 1 { 3 } else { 0 };
        let s = advance(&mut r, DAY + H, Pace::Real, used, per_unit);
        assert!(matches!(s[..], [Step::Notice { period: 1, estimated: 30, .. }]));
        assert_eq!(r.wake_ms, DAY + 3 * H);
        assert!(matches!(
            advance(&mut r, DAY + 3 * H, Pace::Real, used, per_unit)[..],
            [Step::Charge { amount: 30, .. }]
        ));
    }

    #[test]
    fn hybrid_runs_both_sides_and_validity_ends_them() {
        let mut r = row(Mode::Hybrid);
        r.expires_at_ms = DAY;
        let used = |_: i64| 1;
        let s = advance(&mut r, DAY + 3 * H, Pace::Real, used, per_unit);
        // Fixed: notice (late) only; usage: notice (late) only.
        assert_eq!(s.len(), 2);
        let s = advance(&mut r, DAY + 5 * H, Pace::Real, used, per_unit);
        assert_eq!(s.len(), 2, "{s:?}");
        // Both sides are past the validity now.
        assert!(advance(&mut r, 10 * DAY, Pace::Real, used, per_unit).is_empty());
        assert!(!r.active);
    }

    #[test]
    fn a_simulated_clock_takes_each_step_at_its_own_moment() {
        // The test clock jumps ten days: ten notices and ten charges, each a day apart, each
        // notice the lead time before its charge; in the real pace only the first notice.
        let mut r = row(Mode::Fixed);
        let s = advance(&mut r, 10 * DAY + H, Pace::Simulated(DailyWindow::always()), none, per_unit);
        let charges: Vec<i64> =
            s.iter().filter_map(|s| if let Step::Charge { at_ms, .. } = s { Some(*at_ms) } else { None }).collect();
        assert_eq!(charges, (1..=10).map(|d| d * DAY).collect::<Vec<_>>());
        assert_eq!(s.len(), 20, "ten notices, ten charges");
        let mut real = row(Mode::Fixed);
        assert_eq!(advance(&mut real, 10 * DAY + H, Pace::Real, none, per_unit).len(), 1);
    }

    #[test]
    fn a_simulated_clock_moves_steps_into_the_window() {
        use chrono::TimeZone;
        let bj = |d: u32, h: u32| {
            chrono_tz::Asia::Shanghai.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap().timestamp_millis()
        };
        let mut r = row(Mode::Fixed);
        // Signed at 23:00 Beijing: due 23:00 the next day, its notice due at once.
        r.anchor_ms = bj(1, 23);
        r.cycle_anchor_ms = r.anchor_ms;
        r.next_due_ms = bj(2, 23);
        r.notice_lead_ms = DAY;
        let s = advance(&mut r, bj(5, 12), Pace::Simulated(DailyWindow::default()), none, per_unit);
        // The notice waits for 07:00; the charge a full day after it, 07:00 on the 3rd.
        assert!(matches!(s[0], Step::Notice { at_ms, .. } if at_ms == bj(2, 7)), "{s:?}");
        assert!(matches!(s[1], Step::Charge { at_ms, .. } if at_ms == bj(3, 7)), "{s:?}");
    }

    #[test]
    fn a_waiting_change_takes_effect_after_its_last_old_period() {
        // Daily at 10.00; from after period 1 on, weekly at 20.00, re-anchored on period 1.
        let mut r = row(Mode::Fixed);
        (r.change_through, r.change_amount, r.change_cycle) = (1, 2_000, "weekly".into());
        let s = advance(&mut r, 20 * DAY, Pace::Simulated(DailyWindow::always()), none, per_unit);
        let charges: Vec<(u32, i64, i64)> = s
            .iter()
            .filter_map(|s| match s {
                Step::Charge { period, amount, due_ms, .. } => Some((*period, *amount, *due_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(charges, vec![(1, 1_000, DAY), (2, 2_000, 8 * DAY), (3, 2_000, 15 * DAY)]);
        assert_eq!(
            (r.cycle.as_str(), r.cycle_anchor_ms, r.cycle_anchor_period, r.change_through),
            ("weekly", DAY, 1, -1)
        );
    }

    #[test]
    fn event_schedules_stay_active_without_a_timer() {
        let mut r = row(Mode::Event);
        assert!(advance(&mut r, 100 * DAY, Pace::Real, none, per_unit).is_empty());
        assert!(r.active);
        assert_eq!(r.wake_ms, i64::MAX);
    }
}
