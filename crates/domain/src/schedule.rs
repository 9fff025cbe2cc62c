//! A contract's billing schedule: the scheduler's aggregate. It owns the contract's timeline
//! (when each notice and charge is due), the pre-debit lead time, the day's charge counters,
//! the open usage period, a change of terms waiting for its period, and the refusals of a
//! contract that no longer bills.
//!
//! A schedule has up to two sides:
//!
//! - the **fixed** side (fixed-cycle and hybrid plans): period `n` falls due on the calendar
//!   (`modification::Calendar`, `n` cycles after the signing until a cycle change re-anchors
//!   it); its pre-debit notice goes out the plan's lead time before, and the charge goes no
//!   sooner than the due time and no sooner than the lead time after the notice went out (a
//!   late notice, say after an outage, delays its charge). Period 0, the charge at signing,
//!   needs no notice: the payer confirmed it moments before.
//! - the **usage** side (usage and hybrid plans): usage period `u` runs from `u - 1` to `u`
//!   usage cycles after the signing and closes its grace window later. Its notice goes out the
//!   lead time before the close, with the usage so far as the estimate; once closed and
//!   noticed, one charge bills the period's total. A period with nothing to bill is passed
//!   over without notice or charge; one whose usage arrived after the notice time is noticed
//!   at the close and charged the lead time after.
//!
//! Two paces. On the system clock a step is taken when its moment has passed, at the moment
//! the due loop takes it: a notice sent late is late, and its charge waits the lead time
//! after it. On a test clock, moving the clock *simulates* the time in between: each step is
//! taken at its own moment (moved into the charge window), so advancing the clock by a year
//! runs a year of billing, notices a lead time before each charge.
//!
//! The schedule's events are transitions of its own state, which the scheduler keeps in its
//! table (one row per contract); the notices and charges they stand for become log events.
use crate::aggregate::Aggregate;
use crate::clock::{Timestamp, from_millis};
use crate::cycle::Cycle;
use crate::ids::{ChargeId, ContractId, MerchantId, PayerId};
use crate::limits::{self, Breach, Limits};
use crate::modification::{self, Calendar, Position};
use crate::money::Money;
use crate::plan::{ChargeMode, ModificationRule};
use crate::window::DailyWindow;
use chrono::{NaiveDate, TimeDelta};

/// How many steps one side may take in one advance: a schedule far behind catches up over
/// several passes of the due loop instead of holding one transaction.
pub const MAX_STEPS: usize = 64;

/// A contract's billing schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub contract_id: ContractId,
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    /// The plan the contract was signed against (its limits and pricing); empty when none.
    pub plan_id: String,
    pub mode: ChargeMode,
    /// The merchant's time zone, which the calendars and the charging day count in.
    pub zone: chrono_tz::Tz,
    /// Each cycle charge's amount (and the contract's currency).
    pub amount: Money,
    pub signed_at: Timestamp,
    /// The end of the contract's validity.
    pub expires_at: Option<Timestamp>,
    /// How long before a charge its pre-debit notice goes out.
    pub notice_lead: TimeDelta,
    pub fixed: FixedSide,
    /// The usage side; `None` for plans that bill no usage.
    pub usage: Option<UsageSide>,
    /// A change of terms waiting for its period.
    pub change: Option<Change>,
    /// What the contract was charged on its latest charging day.
    pub today: DayCount,
    /// The contract's successful charges so far (for the default daily amount limit).
    pub history: History,
    /// Whether it still bills.
    pub active: bool,
    /// The earliest moment anything is due; `None`: no timer (event-triggered plans).
    pub wake: Option<Timestamp>,
    /// Raised by every change to the stored schedule.
    pub rev: i64,
}

/// Where the fixed side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedSide {
    pub calendar: Calendar,
    /// The period the next cycle charge is for, and when it falls due.
    pub next_period: u32,
    pub next_due: Timestamp,
    /// The period whose notice went out last, and when its charge may go.
    pub noticed_period: u32,
    pub ready_at: Timestamp,
}

/// Where the usage side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSide {
    pub cycle: Cycle,
    /// How long after a period ends late usage still counts in it.
    pub grace: TimeDelta,
    /// The open period (from 1), and when it ends.
    pub period: u32,
    pub ends_at: Timestamp,
    /// The period whose notice went out last, and when its charge may go.
    pub noticed: u32,
    pub ready_at: Timestamp,
}

/// A change of terms waiting for its period: the last period on the old terms, then the new
/// amount and cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub through: u32,
    pub amount: Money,
    pub cycle: Cycle,
}

/// The charges counted on one calendar day (the merchant's), against the daily limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCount {
    pub day: Option<NaiveDate>,
    pub count: u32,
    pub amount: i64,
}

/// A contract's successful charges: their sum and when the first one was; and, for the
/// charge-time risk rule's mean, how many and their sum since they were counted (a contract
/// whose charges succeeded before counting began counts from then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    pub total_succeeded: i64,
    pub first_success_at: Option<Timestamp>,
    pub succeeded_count: u32,
    pub counted_total: i64,
}

impl ChargeMode {
    /// Whether it charges a fixed amount each cycle.
    pub fn fixed(self) -> bool {
        matches!(self, ChargeMode::FixedCycle | ChargeMode::Hybrid)
    }

    /// Whether it charges each usage period's metered total.
    pub fn metered(self) -> bool {
        matches!(self, ChargeMode::Usage | ChargeMode::Hybrid)
    }
}

/// How steps whose moment has passed are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At `now` (the due loop runs only while the window is open).
    Real,
    /// At their own moment, moved into the window.
    Simulated(DailyWindow),
}

impl Pace {
    /// When a step scheduled for `at` is taken, if it is taken by `now`; else `Err(wake)`, the
    /// moment to look again.
    fn take(self, at: Timestamp, now: Timestamp) -> Result<Timestamp, Timestamp> {
        let at = match self {
            Pace::Real => return if at <= now { Ok(now) } else { Err(at) },
            Pace::Simulated(w) => w.next_open(at),
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

impl Side {
    /// The charge of `period` on this side.
    pub fn charge_id(self, contract: ContractId, period: u32) -> ChargeId {
        match self {
            Side::Cycle => ChargeId::for_period(contract, period),
            Side::Usage => ChargeId::for_usage(contract, period),
        }
    }
}

/// The usage recorded in one usage period, and what it costs under the plan's pricing
/// (`None`: it cannot be priced; the charge is issued at `i64::MAX` for the limits to refuse,
/// never dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodUsage {
    pub period: u32,
    pub quantity: u64,
    pub price: Option<i64>,
}

/// What a signed contract's schedule starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    pub contract_id: ContractId,
    pub merchant_id: MerchantId,
    pub payer_id: PayerId,
    pub plan_id: String,
    pub amount: Money,
    pub cycle: Cycle,
    pub signed_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub mode: ChargeMode,
    pub zone: chrono_tz::Tz,
    pub notice_lead: TimeDelta,
    /// The plan charges the first cycle at signing (period 0, no notice).
    pub first_charge_at_signing: bool,
    /// The usage period and its grace window (read for metered plans only).
    pub usage_cycle: Cycle,
    pub usage_grace: TimeDelta,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleCommand {
    /// A contract was signed: its schedule opens.
    Open(Box<Opening>),
    /// Take what is due by `now`, with the usage recorded in the periods that may close.
    Advance { pace: Pace, usage: Vec<PeriodUsage> },
    /// A charge of `amount` taken at `at`, checked against the limits and counted.
    Admit { amount: Money, at: Timestamp, limits: Limits, merchant_suspended: bool },
    /// The contract resumed at `at`: billing goes on from the first period due after it.
    Resume { at: Timestamp },
    /// The contract's terms changed, from `effective_at` under the plan's rule.
    Modify { amount: Money, cycle: Cycle, rule: ModificationRule, effective_at: Timestamp },
}

/// The transitions of a schedule. `Noticed` and `Charged` are steps the platform takes (a
/// pre-debit notice, a charge), `at` when it takes them.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleEvent {
    Opened(Box<Schedule>),
    Noticed {
        side: Side,
        period: u32,
        estimated: i64,
        charge_due: Timestamp,
        at: Timestamp,
    },
    /// `quantity` is the usage billed (0 for cycle charges).
    Charged {
        side: Side,
        period: u32,
        amount: i64,
        due: Timestamp,
        quantity: u64,
        at: Timestamp,
    },
    /// A usage period closed with nothing to bill.
    UsagePassed {
        period: u32,
    },
    /// The waiting change of terms took effect: the new amount, calendar and next period.
    TermsChanged {
        amount: Money,
        calendar: Calendar,
        next_period: u32,
        next_due: Timestamp,
    },
    /// Nothing is due before `until` (`None`: no timer, the schedule waits for triggers).
    Waits {
        until: Option<Timestamp>,
    },
    /// Nothing is left to bill.
    Ended,
    /// A charge on `day` was admitted under the limits.
    Counted {
        day: NaiveDate,
        amount: i64,
    },
    /// Billing goes on from `next_period`; the schedule looks at once.
    Resumed {
        next_period: u32,
        next_due: Timestamp,
    },
    /// New terms: in force, or waiting in `change`; the schedule looks at once.
    Modified {
        amount: Money,
        calendar: Calendar,
        next_period: u32,
        next_due: Timestamp,
        change: Option<Change>,
    },
}

impl ScheduleEvent {
    /// When a step is taken; `None` for the schedule's own transitions.
    pub fn at(&self) -> Option<Timestamp> {
        match self {
            ScheduleEvent::Noticed { at, .. } | ScheduleEvent::Charged { at, .. } => Some(*at),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule is already open")]
    AlreadyOpen,
    #[error("no schedule")]
    NotOpen,
    /// The calendar runs out before the next period (the schedule can bill no more).
    #[error("the contract's calendar has no next period")]
    CalendarEnded,
    #[error(transparent)]
    Breach(#[from] Breach),
}

/// Why a schedule takes no charge now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Suspended, terminated or expired.
    Inactive,
    Expired(Timestamp),
}

impl Refusal {
    /// The refusal as the limits' rejection of a charge.
    pub fn breach(self) -> Breach {
        match self {
            Refusal::Inactive => Breach {
                rule: "contract_state",
                detail: "the contract is not active (suspended, terminated or expired)".into(),
            },
            Refusal::Expired(at) => {
                Breach { rule: "validity", detail: format!("the contract expired at {}", at.to_rfc3339()) }
            }
        }
    }
}

/// A charge held for the charge window is not issued once its contract stopped billing.
pub fn stopped_while_held() -> Breach {
    Breach {
        rule: "contract_state",
        detail: "the contract stopped billing while the charge waited for the charge window".into(),
    }
}

impl Schedule {
    /// A signed contract's schedule: the sides its plan's mode calls for, in its merchant's
    /// calendar, with its first timer set. A plan may ask for the first charge at signing
    /// (period 0, no notice); otherwise the first falls due a cycle after the signing.
    pub fn open(o: Opening) -> Option<Schedule> {
        let calendar = Calendar { cycle: o.cycle, anchor: o.signed_at, anchor_period: 0 };
        let (period, due) =
            if o.first_charge_at_signing { (0, o.signed_at) } else { (1, o.cycle.due_at(o.signed_at, 1, &o.zone)?) };
        let usage = if o.mode.metered() {
            Some(UsageSide {
                cycle: o.usage_cycle,
                grace: o.usage_grace,
                period: 1,
                ends_at: o.usage_cycle.due_at(o.signed_at, 1, &o.zone)?,
                noticed: 0,
                ready_at: from_millis(0),
            })
        } else {
            None
        };
        let fixed_wake = if period == 0 { due } else { due - o.notice_lead };
        let wake = match o.mode {
            ChargeMode::FixedCycle => Some(fixed_wake),
            ChargeMode::EventTriggered => None,
            ChargeMode::Usage | ChargeMode::Hybrid => {
                let u = usage.as_ref()?;
                let usage_wake = u.ends_at + u.grace - o.notice_lead;
                Some(if o.mode.fixed() { fixed_wake.min(usage_wake) } else { usage_wake })
            }
        };
        Some(Schedule {
            contract_id: o.contract_id,
            merchant_id: o.merchant_id,
            payer_id: o.payer_id,
            plan_id: o.plan_id,
            mode: o.mode,
            zone: o.zone,
            amount: o.amount,
            signed_at: o.signed_at,
            expires_at: o.expires_at,
            notice_lead: o.notice_lead,
            fixed: FixedSide {
                calendar,
                next_period: period,
                next_due: due,
                noticed_period: 0,
                ready_at: from_millis(0),
            },
            usage,
            change: None,
            today: DayCount::default(),
            history: History::default(),
            active: true,
            wake,
            rev: 0,
        })
    }

    /// Why the schedule takes no charge at `now`; `None` when it does.
    pub fn refusal(&self, now: Timestamp) -> Option<Refusal> {
        if !self.active {
            return Some(Refusal::Inactive);
        }
        match self.expires_at {
            Some(at) if now > at => Some(Refusal::Expired(at)),
            _ => None,
        }
    }

    /// Whether a pre-debit notice goes out before the charge of `period`.
    fn needs_notice(&self, period: u32) -> bool {
        period > 0 && self.notice_lead > TimeDelta::zero()
    }

    /// When the next cycle charge may go: its due time, or later when its notice went out
    /// late. `None` for schedules without a fixed side.
    pub fn next_charge_at(&self) -> Option<Timestamp> {
        let f = &self.fixed;
        self.mode.fixed().then(
            || {
                if f.noticed_period >= f.next_period { f.next_due.max(f.ready_at) } else { f.next_due }
            },
        )
    }

    /// The calendar day `at` falls on, in the merchant's zone.
    pub fn day_of(&self, at: Timestamp) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// What was charged so far on the day of `at`.
    pub fn used_on(&self, day: NaiveDate) -> limits::Today {
        if self.today.day == Some(day) {
            limits::Today { count: self.today.count, amount: self.today.amount }
        } else {
            limits::Today::default()
        }
    }

    /// Checks a charge of `amount` taken at `at` against the limits and what the contract was
    /// charged on that day (a suspended merchant's charges are refused); the event counts it.
    pub fn admit(
        &self,
        amount: Money,
        at: Timestamp,
        limits: &Limits,
        merchant_suspended: bool,
    ) -> Result<ScheduleEvent, Breach> {
        limits::check_merchant(merchant_suspended)?;
        let day = self.day_of(at);
        limits::check(amount, limits, self.used_on(day))?;
        Ok(ScheduleEvent::Counted { day, amount: amount.minor_units() })
    }

    /// The usage period a record occurring at `occurred` counts in, recorded at `now`: the one
    /// it occurred in while that period's grace window is open, else the first period still
    /// open (late usage moves forward, never back into a period already billed). `None` for a
    /// schedule without a usage side or past the calendar's end.
    pub fn usage_period_of(&self, occurred: Timestamp, now: Timestamp) -> Option<u32> {
        let u = self.usage.as_ref()?;
        let end = |p: u32| u.cycle.due_at(self.signed_at, p, &self.zone);
        // The first period not billed yet whose grace window is still open.
        let mut open = u.period.max(1);
        while end(open)? + u.grace <= now {
            open = open.checked_add(1)?;
        }
        // The period it occurred in, searched from there.
        let mut p = open;
        while end(p)? <= occurred {
            p = p.checked_add(1)?;
        }
        Some(p)
    }

    /// What is due by `now`, in the order it is decided (the fixed side's, then the usage
    /// side's, then the next timer): apply them in this order. The steps among them go out
    /// in the order of their `at` (limits count per calendar day).
    pub fn advance(&self, now: Timestamp, pace: Pace, usage: &[PeriodUsage]) -> Vec<ScheduleEvent> {
        let mut events = Vec::new();
        // A copy of the parts that move: no allocation.
        let mut sides = Sides { fixed: self.fixed, usage: self.usage, change: self.change, amount: self.amount };
        let fixed_wake = if self.mode.fixed() { self.fixed_side(&mut sides, now, pace, &mut events) } else { None };
        let usage_wake =
            if self.mode.metered() { self.usage_side(&mut sides, now, pace, usage, &mut events) } else { None };
        events.push(match (fixed_wake, usage_wake) {
            (Some(a), Some(b)) => ScheduleEvent::Waits { until: Some(a.min(b)) },
            (Some(a), None) | (None, Some(a)) => ScheduleEvent::Waits { until: Some(a) },
            // Event-triggered schedules have no timer but stay active for TriggerCharge.
            (None, None) if self.mode == ChargeMode::EventTriggered => ScheduleEvent::Waits { until: None },
            (None, None) => ScheduleEvent::Ended,
        });
        events
    }

    /// The fixed side; returns when it next needs attention, `None` when it is done.
    fn fixed_side(
        &self,
        s: &mut Sides,
        now: Timestamp,
        pace: Pace,
        events: &mut Vec<ScheduleEvent>,
    ) -> Option<Timestamp> {
        for _ in 0..MAX_STEPS {
            // A change of terms takes effect once its last period on the old terms is behind.
            if let Some(change) = s.change
                && s.fixed.next_period > change.through
            {
                let e = self.change_taking_effect(&s.fixed, change, None)?;
                s.apply(self, &e);
                events.push(e);
            }
            let (period, due) = (s.fixed.next_period, s.fixed.next_due);
            if self.expires_at.is_some_and(|end| due > end) {
                return None;
            }
            let needs_notice = self.needs_notice(period);
            if needs_notice && s.fixed.noticed_period < period {
                let at = match pace.take(due - self.notice_lead, now) {
                    Ok(at) => at,
                    Err(wake) => return Some(wake),
                };
                let e = ScheduleEvent::Noticed {
                    side: Side::Cycle,
                    period,
                    estimated: s.amount.minor_units(),
                    charge_due: due,
                    at,
                };
                s.apply(self, &e);
                events.push(e);
                continue;
            }
            let ready = if needs_notice { due.max(s.fixed.ready_at) } else { due };
            let at = match pace.take(ready, now) {
                Ok(at) => at,
                Err(wake) => return Some(wake),
            };
            let e = ScheduleEvent::Charged {
                side: Side::Cycle,
                period,
                amount: s.amount.minor_units(),
                due,
                quantity: 0,
                at,
            };
            s.apply(self, &e);
            events.push(e);
            if s.fixed.next_period == period {
                // The calendar has no next period.
                return None;
            }
        }
        Some(now)
    }

    /// The usage side; returns when it next needs attention, `None` when it is done.
    fn usage_side(
        &self,
        s: &mut Sides,
        now: Timestamp,
        pace: Pace,
        usage: &[PeriodUsage],
        events: &mut Vec<ScheduleEvent>,
    ) -> Option<Timestamp> {
        for _ in 0..MAX_STEPS {
            let u = s.usage?;
            let period = Some(u.period).filter(|p| *p > 0)?;
            if let Some(end) = self.expires_at {
                let start = u.cycle.due_at(self.signed_at, period - 1, &self.zone)?;
                if start >= end {
                    return None;
                }
            }
            let close = u.ends_at + u.grace;
            let recorded = usage.iter().find(|r| r.period == period);
            let used = recorded.map_or(0, |r| r.quantity);
            let amount = if used == 0 { 0 } else { recorded.and_then(|r| r.price).unwrap_or(i64::MAX) };
            let e = if u.noticed < period {
                let notice_at = close - self.notice_lead;
                if now < notice_at {
                    return Some(notice_at);
                }
                if amount > 0 {
                    let at = match pace.take(notice_at, now) {
                        Ok(at) => at,
                        Err(wake) => return Some(wake),
                    };
                    let e =
                        ScheduleEvent::Noticed { side: Side::Usage, period, estimated: amount, charge_due: close, at };
                    s.apply(self, &e);
                    events.push(e);
                    continue;
                }
                if now < close {
                    return Some(close);
                }
                // Closed with nothing to bill: on to the next period.
                ScheduleEvent::UsagePassed { period }
            } else {
                let at = match pace.take(close.max(u.ready_at), now) {
                    Ok(at) => at,
                    Err(wake) => return Some(wake),
                };
                if amount > 0 {
                    ScheduleEvent::Charged { side: Side::Usage, period, amount, due: close, quantity: used, at }
                } else {
                    ScheduleEvent::UsagePassed { period }
                }
            };
            s.apply(self, &e);
            events.push(e);
            if s.usage.is_some_and(|u| u.period == period) {
                // The calendar has no next period.
                return None;
            }
        }
        Some(now)
    }

    /// The waiting change put into effect: the new amount, and for a new cycle a calendar
    /// re-anchored on the last period on the old terms, its next period the first due no
    /// earlier than `not_before` (`modification::rebase`). `None` when the calendar has no
    /// such period.
    fn change_taking_effect(
        &self,
        fixed: &FixedSide,
        change: Change,
        not_before: Option<Timestamp>,
    ) -> Option<ScheduleEvent> {
        let old = &fixed.calendar;
        let last_due = old.due(change.through, &self.zone)?;
        let not_before = not_before.map_or(last_due, |t| t.max(last_due));
        let (calendar, next_period, next_due) =
            modification::rebase(old, change.cycle, change.through, fixed.next_period, not_before, &self.zone)?;
        Some(ScheduleEvent::TermsChanged { amount: change.amount, calendar, next_period, next_due })
    }

    /// New terms from the period `domain::modification` says: at once when that is the period
    /// due next (re-anchoring a changed cycle), else waiting until the schedule passes the last
    /// period on the old terms. A later change replaces one still waiting. The new currency
    /// holds at once.
    fn modified(
        &self,
        amount: Money,
        cycle: Cycle,
        rule: ModificationRule,
        effective_at: Timestamp,
    ) -> Result<ScheduleEvent, ScheduleError> {
        let current = Money::new(self.amount.minor_units(), amount.currency());
        if !self.mode.fixed() {
            // No cycle charges: the terms are kept for what reads them.
            let calendar = Calendar { cycle, ..self.fixed.calendar };
            return Ok(ScheduleEvent::Modified {
                amount,
                calendar,
                next_period: self.fixed.next_period,
                next_due: self.fixed.next_due,
                change: self.change,
            });
        }
        let f = &self.fixed;
        let position = Position {
            next_period: f.next_period,
            announced: self.needs_notice(f.next_period) && f.noticed_period >= f.next_period,
        };
        let through = modification::last_on_old_terms(rule, &f.calendar, position, effective_at, &self.zone);
        let change = Change { through, amount, cycle };
        if through >= f.next_period {
            return Ok(ScheduleEvent::Modified {
                amount: current,
                calendar: f.calendar,
                next_period: f.next_period,
                next_due: f.next_due,
                change: Some(change),
            });
        }
        match self.change_taking_effect(f, change, Some(effective_at)) {
            Some(ScheduleEvent::TermsChanged { amount, calendar, next_period, next_due }) => {
                Ok(ScheduleEvent::Modified { amount, calendar, next_period, next_due, change: None })
            }
            _ => Err(ScheduleError::CalendarEnded),
        }
    }

    /// Billing goes on from the first period due after `at`: periods that fell due while the
    /// contract was suspended are not charged (usage recorded before is still billed when its
    /// period closes).
    fn resumed(&self, at: Timestamp) -> Result<ScheduleEvent, ScheduleError> {
        let (mut period, mut due) = (self.fixed.next_period, self.fixed.next_due);
        if self.mode.fixed() {
            while due <= at {
                period = period.saturating_add(1);
                due = self.fixed.calendar.due(period, &self.zone).ok_or(ScheduleError::CalendarEnded)?;
            }
        }
        Ok(ScheduleEvent::Resumed { next_period: period, next_due: due })
    }

    /// The schedule after `event`.
    pub fn apply(&mut self, event: &ScheduleEvent) {
        let mut sides = Sides { fixed: self.fixed, usage: self.usage, change: self.change, amount: self.amount };
        sides.apply(self, event);
        (self.fixed, self.usage, self.change, self.amount) = (sides.fixed, sides.usage, sides.change, sides.amount);
        match event {
            ScheduleEvent::Opened(s) => *self = (**s).clone(),
            ScheduleEvent::Waits { until } => self.wake = *until,
            ScheduleEvent::Ended => {
                self.active = false;
                self.wake = None;
            }
            ScheduleEvent::Counted { day, amount } => {
                let used = self.used_on(*day);
                self.today = DayCount { day: Some(*day), count: used.count + 1, amount: used.amount + amount };
            }
            ScheduleEvent::Resumed { .. } => {
                self.active = true;
                self.wake = Some(from_millis(0));
            }
            ScheduleEvent::Modified { .. } => self.wake = Some(from_millis(0)),
            _ => {}
        }
    }
}

/// The parts of a schedule its timeline moves, copied so that deciding needs no allocation.
#[derive(Debug, Clone, Copy)]
struct Sides {
    fixed: FixedSide,
    usage: Option<UsageSide>,
    change: Option<Change>,
    amount: Money,
}

impl Sides {
    fn apply(&mut self, s: &Schedule, event: &ScheduleEvent) {
        match *event {
            ScheduleEvent::Noticed { side: Side::Cycle, period, charge_due, at, .. } => {
                self.fixed.noticed_period = period;
                self.fixed.ready_at = charge_due.max(at + s.notice_lead);
            }
            ScheduleEvent::Noticed { side: Side::Usage, period, charge_due, at, .. } => {
                if let Some(u) = &mut self.usage {
                    u.noticed = period;
                    u.ready_at = charge_due.max(at + s.notice_lead);
                }
            }
            ScheduleEvent::Charged { side: Side::Cycle, period, .. } => {
                if let Some(next) = period.checked_add(1)
                    && let Some(due) = self.fixed.calendar.due(next, &s.zone)
                {
                    (self.fixed.next_period, self.fixed.next_due) = (next, due);
                }
            }
            ScheduleEvent::Charged { side: Side::Usage, period, .. } | ScheduleEvent::UsagePassed { period } => {
                if let Some(u) = &mut self.usage
                    && let Some(next) = period.checked_add(1)
                    && let Some(ends) = u.cycle.due_at(s.signed_at, next, &s.zone)
                {
                    (u.period, u.ends_at) = (next, ends);
                }
            }
            ScheduleEvent::TermsChanged { amount, calendar, next_period, next_due } => {
                self.amount = amount;
                self.fixed.calendar = calendar;
                (self.fixed.next_period, self.fixed.next_due) = (next_period, next_due);
                self.change = None;
            }
            ScheduleEvent::Modified { amount, calendar, next_period, next_due, change } => {
                self.amount = amount;
                self.fixed.calendar = calendar;
                (self.fixed.next_period, self.fixed.next_due) = (next_period, next_due);
                self.change = change;
            }
            ScheduleEvent::Resumed { next_period, next_due } => {
                (self.fixed.next_period, self.fixed.next_due) = (next_period, next_due);
            }
            _ => {}
        }
    }
}

impl Aggregate for Schedule {
    /// `None` until the contract is signed.
    type State = Option<Schedule>;
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = ScheduleError;

    fn decide(
        state: &Option<Schedule>,
        command: ScheduleCommand,
        now: Timestamp,
    ) -> Result<Vec<ScheduleEvent>, ScheduleError> {
        let s = match (state, command) {
            (None, ScheduleCommand::Open(o)) => {
                return Ok(Schedule::open(*o).map(|s| vec![ScheduleEvent::Opened(Box::new(s))]).unwrap_or_default());
            }
            (Some(_), ScheduleCommand::Open(_)) => return Err(ScheduleError::AlreadyOpen),
            (None, _) => return Err(ScheduleError::NotOpen),
            (Some(s), command) => (s, command),
        };
        match s {
            (s, ScheduleCommand::Advance { pace, usage }) => Ok(s.advance(now, pace, &usage)),
            (s, ScheduleCommand::Admit { amount, at, limits, merchant_suspended }) => {
                Ok(vec![s.admit(amount, at, &limits, merchant_suspended)?])
            }
            (s, ScheduleCommand::Resume { at }) => Ok(vec![s.resumed(at)?]),
            (s, ScheduleCommand::Modify { amount, cycle, rule, effective_at }) => {
                Ok(vec![s.modified(amount, cycle, rule, effective_at)?])
            }
            (_, ScheduleCommand::Open(_)) => Err(ScheduleError::AlreadyOpen),
        }
    }

    fn apply(state: Option<Schedule>, event: &ScheduleEvent) -> Option<Schedule> {
        match (state, event) {
            (_, ScheduleEvent::Opened(s)) => Some((**s).clone()),
            (Some(mut s), e) => {
                s.apply(e);
                Some(s)
            }
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Today;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn t(ms: i64) -> Timestamp {
        from_millis(ms)
    }

    fn schedule(mode: ChargeMode) -> Schedule {
        let o = Opening {
            contract_id: ContractId::parse("ct_0190a0f5-8f5e-7c4e-9a57-6f0e0b1d2c3a").unwrap(),
            merchant_id: MerchantId::parse("mch_1").unwrap(),
            payer_id: PayerId::parse("p").unwrap(),
            plan_id: String::new(),
            amount: Money::cny(1_000),
            cycle: Cycle::Daily,
            signed_at: t(0),
            expires_at: None,
            mode,
            zone: chrono_tz::UTC,
            notice_lead: TimeDelta::hours(2),
            first_charge_at_signing: false,
            usage_cycle: Cycle::Daily,
            usage_grace: TimeDelta::hours(1),
        };
        Schedule::open(o).unwrap()
    }

    fn usage(period: u32, quantity: u64) -> Vec<PeriodUsage> {
        vec![PeriodUsage { period, quantity, price: Some(quantity as i64 * 10) }]
    }

    /// Advances `s` to `now`, applies what it decided, and returns the steps in time order.
    fn advance(s: &mut Schedule, now: i64, pace: Pace, usage: &[PeriodUsage]) -> Vec<ScheduleEvent> {
        let events = s.advance(t(now), pace, usage);
        for e in &events {
            s.apply(e);
        }
        let mut steps: Vec<ScheduleEvent> = events.into_iter().filter(|e| e.at().is_some()).collect();
        steps.sort_by_key(|e| e.at());
        steps
    }

    fn wake(s: &Schedule) -> Option<i64> {
        s.wake.map(|w| w.timestamp_millis())
    }

    #[test]
    fn a_schedule_opens_a_cycle_after_signing_or_charges_at_signing() {
        let s = schedule(ChargeMode::FixedCycle);
        assert_eq!((s.fixed.next_period, s.fixed.next_due), (1, t(DAY)));
        assert_eq!(wake(&s), Some(DAY - 2 * H), "the notice, the lead time before the charge");
        let o = Opening {
            contract_id: s.contract_id,
            merchant_id: s.merchant_id.clone(),
            payer_id: s.payer_id.clone(),
            plan_id: String::new(),
            amount: s.amount,
            cycle: Cycle::Monthly,
            signed_at: t(5 * DAY),
            expires_at: None,
            mode: ChargeMode::FixedCycle,
            zone: chrono_tz::UTC,
            notice_lead: TimeDelta::hours(24),
            first_charge_at_signing: true,
            usage_cycle: Cycle::Monthly,
            usage_grace: TimeDelta::hours(1),
        };
        let at_signing = Schedule::open(o.clone()).unwrap();
        assert_eq!((at_signing.fixed.next_period, at_signing.wake), (0, Some(t(5 * DAY))));
        // Period 0 needs no notice: charged at once.
        let mut s = at_signing;
        let steps = advance(&mut s, 5 * DAY, Pace::Real, &[]);
        assert!(matches!(steps[..], [ScheduleEvent::Charged { period: 0, .. }]), "{steps:?}");
        let event = Schedule::open(Opening { mode: ChargeMode::EventTriggered, ..o }).unwrap();
        assert_eq!((event.wake, event.usage), (None, None));
    }

    #[test]
    fn a_cycle_charge_waits_for_its_notice() {
        let mut s = schedule(ChargeMode::FixedCycle);
        assert!(advance(&mut s, DAY - 3 * H, Pace::Real, &[]).is_empty());
        assert_eq!(wake(&s), Some(DAY - 2 * H));
        let steps = advance(&mut s, DAY - 2 * H, Pace::Real, &[]);
        assert_eq!(
            steps,
            vec![ScheduleEvent::Noticed {
                side: Side::Cycle,
                period: 1,
                estimated: 1_000,
                charge_due: t(DAY),
                at: t(DAY - 2 * H)
            }]
        );
        assert_eq!(wake(&s), Some(DAY));
        let steps = advance(&mut s, DAY, Pace::Real, &[]);
        assert_eq!(
            steps,
            vec![ScheduleEvent::Charged {
                side: Side::Cycle,
                period: 1,
                amount: 1_000,
                due: t(DAY),
                quantity: 0,
                at: t(DAY)
            }]
        );
        assert_eq!((s.fixed.next_period, s.fixed.next_due, wake(&s)), (2, t(2 * DAY), Some(2 * DAY - 2 * H)));
        assert_eq!(s.next_charge_at(), Some(t(2 * DAY)));
    }

    #[test]
    fn a_late_notice_delays_its_charge_by_the_lead_time() {
        let mut s = schedule(ChargeMode::FixedCycle);
        // The platform was down until an hour after the due time.
        let steps = advance(&mut s, DAY + H, Pace::Real, &[]);
        assert!(matches!(steps[..], [ScheduleEvent::Noticed { .. }]));
        assert_eq!(wake(&s), Some(DAY + 3 * H));
        assert_eq!(s.next_charge_at(), Some(t(DAY + 3 * H)));
        assert!(advance(&mut s, DAY + 2 * H, Pace::Real, &[]).is_empty());
        assert_eq!(advance(&mut s, DAY + 3 * H, Pace::Real, &[]).len(), 1);
    }

    #[test]
    fn usage_is_billed_after_the_grace_window_and_empty_periods_are_passed_over() {
        let mut s = schedule(ChargeMode::Usage);
        // No usage in period 1: no notice, no charge; the period closes at DAY + 1 h.
        assert!(advance(&mut s, DAY - H, Pace::Real, &[]).is_empty());
        assert_eq!(wake(&s), Some(DAY + H));
        assert!(advance(&mut s, DAY + H, Pace::Real, &[]).is_empty());
        let u = s.usage.unwrap();
        assert_eq!((u.period, u.ends_at), (2, t(2 * DAY)));
        // 7 units in period 2: noticed two hours before the close, charged at it.
        let used = usage(2, 7);
        let steps = advance(&mut s, 2 * DAY - H, Pace::Real, &used);
        assert_eq!(
            steps,
            vec![ScheduleEvent::Noticed {
                side: Side::Usage,
                period: 2,
                estimated: 70,
                charge_due: t(2 * DAY + H),
                at: t(2 * DAY - H)
            }]
        );
        let steps = advance(&mut s, 2 * DAY + H, Pace::Real, &used);
        assert_eq!(
            steps,
            vec![ScheduleEvent::Charged {
                side: Side::Usage,
                period: 2,
                amount: 70,
                due: t(2 * DAY + H),
                quantity: 7,
                at: t(2 * DAY + H)
            }]
        );
        assert_eq!(s.usage.unwrap().period, 3);
    }

    #[test]
    fn usage_that_cannot_be_priced_is_charged_for_the_limits_to_refuse() {
        let mut s = schedule(ChargeMode::Usage);
        let unpriced = [PeriodUsage { period: 1, quantity: 3, price: None }];
        let steps = advance(&mut s, DAY + H, Pace::Simulated(DailyWindow::always()), &unpriced);
        assert!(matches!(steps[..], [_, ScheduleEvent::Charged { amount: i64::MAX, .. }]), "{steps:?}");
    }

    #[test]
    fn usage_arriving_after_the_notice_time_is_noticed_at_the_close() {
        let mut s = schedule(ChargeMode::Usage);
        assert!(advance(&mut s, DAY - H, Pace::Real, &[]).is_empty());
        let used = usage(1, 3);
        let steps = advance(&mut s, DAY + H, Pace::Real, &used);
        assert!(matches!(steps[..], [ScheduleEvent::Noticed { period: 1, estimated: 30, .. }]));
        assert_eq!(wake(&s), Some(DAY + 3 * H));
        assert!(matches!(
            advance(&mut s, DAY + 3 * H, Pace::Real, &used)[..],
            [ScheduleEvent::Charged { amount: 30, .. }]
        ));
    }

    #[test]
    fn hybrid_runs_both_sides_and_validity_ends_them() {
        let mut s = schedule(ChargeMode::Hybrid);
        s.expires_at = Some(t(DAY));
        let used: Vec<PeriodUsage> = (1..20).flat_map(|p| usage(p, 1)).collect();
        let steps = advance(&mut s, DAY + 3 * H, Pace::Real, &used);
        // Fixed: notice (late) only; usage: notice (late) only.
        assert_eq!(steps.len(), 2);
        let steps = advance(&mut s, DAY + 5 * H, Pace::Real, &used);
        assert_eq!(steps.len(), 2, "{steps:?}");
        // Both sides are past the validity now.
        assert!(advance(&mut s, 10 * DAY, Pace::Real, &used).is_empty());
        assert!(!s.active);
    }

    #[test]
    fn a_simulated_clock_takes_each_step_at_its_own_moment() {
        // The test clock jumps ten days: ten notices and ten charges, each a day apart, each
        // notice the lead time before its charge; in the real pace only the first notice.
        let mut s = schedule(ChargeMode::FixedCycle);
        let steps = advance(&mut s, 10 * DAY + H, Pace::Simulated(DailyWindow::always()), &[]);
        let charges: Vec<Timestamp> = steps
            .iter()
            .filter_map(|e| if let ScheduleEvent::Charged { at, .. } = e { Some(*at) } else { None })
            .collect();
        assert_eq!(charges, (1..=10).map(|d| t(d * DAY)).collect::<Vec<_>>());
        assert_eq!(steps.len(), 20, "ten notices, ten charges");
        let mut real = schedule(ChargeMode::FixedCycle);
        assert_eq!(advance(&mut real, 10 * DAY + H, Pace::Real, &[]).len(), 1);
    }

    #[test]
    fn a_simulated_clock_moves_steps_into_the_window() {
        let bj = |d: u32, h: u32| {
            chrono_tz::Asia::Shanghai.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap().timestamp_millis()
        };
        let mut s = schedule(ChargeMode::FixedCycle);
        // Signed at 23:00 Beijing: due 23:00 the next day, its notice due at once.
        s.signed_at = t(bj(1, 23));
        s.fixed.calendar.anchor = s.signed_at;
        s.fixed.next_due = t(bj(2, 23));
        s.notice_lead = TimeDelta::hours(24);
        let steps = advance(&mut s, bj(5, 12), Pace::Simulated(DailyWindow::default()), &[]);
        // The notice waits for 07:00; the charge a full day after it, 07:00 on the 3rd.
        assert!(matches!(steps[0], ScheduleEvent::Noticed { at, .. } if at == t(bj(2, 7))), "{steps:?}");
        assert!(matches!(steps[1], ScheduleEvent::Charged { at, .. } if at == t(bj(3, 7))), "{steps:?}");
    }

    #[test]
    fn a_waiting_change_takes_effect_after_its_last_old_period() {
        // Daily at 10.00; from after period 1 on, weekly at 20.00, re-anchored on period 1.
        let mut s = schedule(ChargeMode::FixedCycle);
        s.change = Some(Change { through: 1, amount: Money::cny(2_000), cycle: Cycle::Weekly });
        let steps = advance(&mut s, 20 * DAY, Pace::Simulated(DailyWindow::always()), &[]);
        let charges: Vec<(u32, i64, Timestamp)> = steps
            .iter()
            .filter_map(|e| match e {
                ScheduleEvent::Charged { period, amount, due, .. } => Some((*period, *amount, *due)),
                _ => None,
            })
            .collect();
        assert_eq!(charges, vec![(1, 1_000, t(DAY)), (2, 2_000, t(8 * DAY)), (3, 2_000, t(15 * DAY))]);
        let c = s.fixed.calendar;
        assert_eq!((c.cycle, c.anchor, c.anchor_period, s.change), (Cycle::Weekly, t(DAY), 1, None));
    }

    #[test]
    fn a_modification_waits_for_the_announced_period_or_applies_at_once() {
        let mut s = schedule(ChargeMode::FixedCycle);
        advance(&mut s, DAY - 2 * H, Pace::Real, &[]);
        assert_eq!(s.fixed.noticed_period, 1);
        // Period 1 is announced: it keeps the old terms whatever the rule.
        let modify = |rule| ScheduleCommand::Modify {
            amount: Money::cny(3_000),
            cycle: Cycle::Daily,
            rule,
            effective_at: t(DAY - H),
        };
        let e = Schedule::decide(&Some(s.clone()), modify(ModificationRule::Immediately), t(DAY - H)).unwrap();
        let after = Schedule::fold_from(Some(s.clone()), &e).unwrap();
        assert_eq!(after.change.map(|c| c.through), Some(1));
        assert_eq!(after.amount, Money::cny(1_000));
        assert_eq!(after.wake, Some(from_millis(0)), "the due loop looks at once");
        // Charged; now an immediate change applies from period 2 on.
        let mut s = after;
        s.change = None;
        advance(&mut s, DAY, Pace::Real, &[]);
        let e = Schedule::decide(&Some(s.clone()), modify(ModificationRule::Immediately), t(DAY + H)).unwrap();
        let after = Schedule::fold_from(Some(s), &e).unwrap();
        assert_eq!((after.amount, after.change, after.fixed.next_period), (Money::cny(3_000), None, 2));
    }

    #[test]
    fn a_resumed_schedule_skips_the_periods_of_its_suspension() {
        let mut s = schedule(ChargeMode::FixedCycle);
        s.active = false;
        assert_eq!(s.refusal(t(0)), Some(Refusal::Inactive));
        let e =
            Schedule::decide(&Some(s.clone()), ScheduleCommand::Resume { at: t(3 * DAY + H) }, t(3 * DAY + H)).unwrap();
        let s = Schedule::fold_from(Some(s), &e).unwrap();
        assert!(s.active);
        assert_eq!((s.fixed.next_period, s.fixed.next_due), (4, t(4 * DAY)));
    }

    #[test]
    fn event_schedules_stay_active_without_a_timer() {
        let mut s = schedule(ChargeMode::EventTriggered);
        assert!(advance(&mut s, 100 * DAY, Pace::Real, &[]).is_empty());
        assert!(s.active);
        assert_eq!(s.wake, None);
    }

    #[test]
    fn expired_and_inactive_schedules_refuse_charges() {
        let mut s = schedule(ChargeMode::EventTriggered);
        s.expires_at = Some(t(DAY));
        assert_eq!(s.refusal(t(DAY)), None);
        assert_eq!(s.refusal(t(DAY + 1)), Some(Refusal::Expired(t(DAY))));
        assert_eq!(Refusal::Expired(t(DAY)).breach().rule, "validity");
        s.active = false;
        assert_eq!(s.refusal(t(0)).map(|r| r.breach().rule), Some("contract_state"));
        assert_eq!(stopped_while_held().rule, "contract_state");
    }

    #[test]
    fn the_day_is_the_merchants_and_counters_start_again_each_day() {
        let mut s = schedule(ChargeMode::EventTriggered);
        s.zone = chrono_tz::Asia::Shanghai;
        let l = Limits { per_charge_cap: 10_000, daily_count: 2, daily_amount: None };
        // 23:00 UTC on day 0 is already day 1 in Beijing.
        let late = t(23 * H);
        let e = s.admit(Money::cny(100), late, &l, false).unwrap();
        s.apply(&e);
        assert_eq!(s.today.day, Some(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()));
        s.apply(&s.admit(Money::cny(100), late, &l, false).unwrap());
        assert_eq!(s.admit(Money::cny(100), late, &l, false).unwrap_err().rule, "daily_count");
        assert_eq!(s.admit(Money::cny(100), late, &l, true).unwrap_err().rule, "merchant_suspended");
        // The next Beijing day counts from nothing.
        s.apply(&s.admit(Money::cny(100), late + TimeDelta::days(1), &l, false).unwrap());
        assert_eq!((s.today.count, s.today.amount), (1, 100));
    }

    #[test]
    fn late_usage_moves_forward_never_into_a_billed_period() {
        let s = schedule(ChargeMode::Usage);
        // Occurred in period 1, recorded within its grace window: period 1.
        assert_eq!(s.usage_period_of(t(DAY - H), t(DAY + H / 2)), Some(1));
        // Recorded after the grace window: the first period still open.
        assert_eq!(s.usage_period_of(t(DAY - H), t(DAY + 2 * H)), Some(2));
        assert_eq!(s.usage_period_of(t(3 * DAY + H), t(3 * DAY + 2 * H)), Some(4));
        assert_eq!(schedule(ChargeMode::FixedCycle).usage_period_of(t(0), t(0)), None);
    }

    impl Schedule {
        fn fold_from(state: Option<Schedule>, events: &[ScheduleEvent]) -> Option<Schedule> {
            events.iter().fold(state, <Schedule as Aggregate>::apply)
        }
    }

    proptest! {
        /// However far the clock moves, a schedule's charges come one period after another,
        /// each at or after its due time and, past period 0, after its notice by the lead time.
        #[test]
        fn periods_are_charged_in_order_after_their_notices(
            cycle in prop_oneof![Just(Cycle::Daily), Just(Cycle::Weekly), Just(Cycle::Monthly)],
            lead_hours in 0i64..72,
            jumps in proptest::collection::vec(1i64..(40 * DAY), 1..8),
            simulated in any::<bool>(),
        ) {
            let mut s = schedule(ChargeMode::FixedCycle);
            s.notice_lead = TimeDelta::hours(lead_hours);
            s.fixed.calendar.cycle = cycle;
            s.fixed.next_due = cycle.due_at(s.signed_at, 1, &s.zone).unwrap();
            let pace = if simulated { Pace::Simulated(DailyWindow::always()) } else { Pace::Real };
            let (mut now, mut last_period, mut noticed) = (0i64, 0u32, std::collections::HashMap::new());
            for jump in jumps {
                now += jump;
                for step in advance(&mut s, now, pace, &[]) {
                    match step {
                        ScheduleEvent::Noticed { period, at, .. } => { noticed.insert(period, at); }
                        ScheduleEvent::Charged { period, due, at, .. } => {
                            prop_assert_eq!(period, last_period + 1);
                            prop_assert!(at >= due);
                            if lead_hours > 0 {
                                prop_assert!(at >= noticed[&period] + s.notice_lead);
                            }
                            last_period = period;
                        }
                        _ => {}
                    }
                }
                prop_assert!(s.wake.is_some_and(|w| w >= t(now)));
            }
        }

        /// Charges admitted one after another never exceed the daily limits of their day.
        #[test]
        fn daily_counters_never_exceed_the_limits(
            charges in proptest::collection::vec((1i64..5_000, 0i64..(3 * DAY)), 1..40),
            count in 1u32..10,
            daily in 1i64..20_000,
        ) {
            let mut s = schedule(ChargeMode::EventTriggered);
            let l = Limits { per_charge_cap: 5_000, daily_count: count, daily_amount: Some(daily) };
            let mut sorted = charges;
            sorted.sort_by_key(|c| c.1);
            for (amount, at) in sorted {
                if let Ok(e) = s.admit(Money::cny(amount), t(at), &l, false) {
                    s.apply(&e);
                    prop_assert!(s.today.count <= count);
                    prop_assert!(s.today.amount <= daily);
                    prop_assert_eq!(s.used_on(s.day_of(t(at))), Today { count: s.today.count, amount: s.today.amount });
                }
            }
        }
    }
}
