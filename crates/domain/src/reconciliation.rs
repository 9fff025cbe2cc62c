//! Reconciliation: what one line of a provider's daily statement says against what the
//! platform's books hold of the same order, and the deadline each kind of disagreement gets.
//!
//! A trade line (`SUCCESS`) names an attempt's order number; the books know the charge it
//! belongs to (the order number derives from the charge id and the attempt). A refund line
//! (`REFUND`) names the refund's number. The kinds:
//! - **short payment**: the books recorded money (a succeeded charge or refund) that the
//!   statement does not carry — found after the whole statement is read;
//! - **status mismatch**: the statement has the provider take money for an order the books
//!   hold as not succeeded (or a refund the books hold as not paid back);
//! - **duplicate**: the payer was debited twice for one charge: under an order number other
//!   than the one the charge succeeded with, or the same order number twice on the statement;
//! - **unknown order**: the statement carries an order the books do not have for this merchant;
//! - **amount mismatch**: both know the order, with different amounts.
use crate::calendar::WorkingCalendar;
use chrono::{NaiveDate, TimeZone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ShortPayment,
    StatusMismatch,
    Duplicate,
    UnknownOrder,
    AmountMismatch,
}

impl Kind {
    pub const ALL: [Kind; 5] =
        [Kind::ShortPayment, Kind::StatusMismatch, Kind::Duplicate, Kind::UnknownOrder, Kind::AmountMismatch];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ShortPayment => "short_payment",
            Kind::StatusMismatch => "status_mismatch",
            Kind::Duplicate => "duplicate",
            Kind::UnknownOrder => "unknown_order",
            Kind::AmountMismatch => "amount_mismatch",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Working days to resolve it in (0: at once). Short payment 3 and status mismatch 1, as
    /// the rules give them; an amount mismatch is money missing like a short payment (3), an
    /// unknown order needs the merchant's order log like a status mismatch (1).
    pub fn working_days(self) -> u32 {
        match self {
            Kind::ShortPayment | Kind::AmountMismatch => 3,
            Kind::StatusMismatch | Kind::UnknownOrder => 1,
            Kind::Duplicate => 0,
        }
    }

    /// What settles it.
    pub fn evidence(self) -> &'static str {
        match self {
            Kind::ShortPayment | Kind::AmountMismatch => "bank_statement",
            Kind::StatusMismatch | Kind::UnknownOrder => "merchant_order_log",
            Kind::Duplicate => "payer_complaint",
        }
    }
}

/// When a discrepancy found at `found_ms` must be resolved by: the end (midnight, Beijing) of
/// the `kind.working_days()`-th working day after the day it was found; at once for a duplicate.
pub fn deadline_ms(calendar: &WorkingCalendar, kind: Kind, found_ms: i64) -> i64 {
    let days = kind.working_days();
    if days == 0 {
        return found_ms;
    }
    let found = crate::clock::from_millis(found_ms).with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    day_bounds(calendar.add_working_days(found, days)).1
}

/// The first and last millisecond (exclusive) of `date` in Beijing.
pub fn day_bounds(date: NaiveDate) -> (i64, i64) {
    let at = |d: NaiveDate| {
        chrono_tz::Asia::Shanghai
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
            .earliest()
            .map_or(0, |t| t.timestamp_millis())
    };
    (at(date), at(date.succ_opt().unwrap_or(date)))
}

/// What the books hold of the order a statement line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booked {
    /// A charge that succeeded, with the order number it succeeded under and its amount.
    Succeeded { out_trade_no: String, amount: i64 },
    /// A charge of this merchant that has not succeeded (failed, or not decided).
    NotSucceeded { amount: i64 },
    /// A refund paid back, and its amount.
    Refunded { amount: i64 },
    /// A refund asked for and not paid back (pending or failed).
    RefundNotPaid { amount: i64 },
    /// Nothing of this merchant's.
    Nothing,
}

/// What a trade line (the provider took `amount` under `out_trade_no`) is against the books;
/// `None`: it agrees. `seen_before`: the same order number came earlier in this statement.
pub fn trade(out_trade_no: &str, amount: i64, booked: &Booked, seen_before: bool) -> Option<Kind> {
    // Twice on the statement is a second debit of a charge only if the charge took money.
    if seen_before && matches!(booked, Booked::Succeeded { .. }) {
        return Some(Kind::Duplicate);
    }
    match booked {
        Booked::Succeeded { out_trade_no: took, amount: booked } => {
            if took != out_trade_no && !took.is_empty() {
                Some(Kind::Duplicate)
            } else if *booked != amount {
                Some(Kind::AmountMismatch)
            } else {
                None
            }
        }
        Booked::NotSucceeded { .. } => Some(Kind::StatusMismatch),
        Booked::Refunded { .. } | Booked::RefundNotPaid { .. } | Booked::Nothing => Some(Kind::UnknownOrder),
    }
}

/// What a refund line (the provider paid back `amount`) is against the books.
pub fn refund(amount: i64, booked: &Booked, seen_before: bool) -> Option<Kind> {
    // Twice on the statement is money paid back twice only if it was paid back at all.
    if seen_before && matches!(booked, Booked::Refunded { .. }) {
        return Some(Kind::Duplicate);
    }
    match booked {
        Booked::Refunded { amount: booked } if *booked == amount => None,
        Booked::Refunded { .. } => Some(Kind::AmountMismatch),
        Booked::RefundNotPaid { .. } => Some(Kind::StatusMismatch),
        _ => Some(Kind::UnknownOrder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_line_is_told_apart() {
        let ok = Booked::Succeeded { out_trade_no: "a_1".into(), amount: 100 };
        assert_eq!(trade("a_1", 100, &ok, false), None);
        assert_eq!(trade("a_1", 90, &ok, false), Some(Kind::AmountMismatch));
        assert_eq!(trade("a_2", 100, &ok, false), Some(Kind::Duplicate), "another attempt debited too");
        assert_eq!(trade("a_1", 100, &ok, true), Some(Kind::Duplicate), "the same order twice");
        assert_eq!(trade("zz", 100, &Booked::Nothing, true), Some(Kind::UnknownOrder), "twice, and still unknown");
        let failed = Booked::NotSucceeded { amount: 100 };
        assert_eq!(trade("a_1", 100, &failed, true), Some(Kind::StatusMismatch), "twice, and took nothing");
        assert_eq!(refund(50, &Booked::Refunded { amount: 50 }, true), Some(Kind::Duplicate));
        assert_eq!(refund(50, &Booked::Nothing, true), Some(Kind::UnknownOrder));
        assert_eq!(trade("a_1", 100, &Booked::NotSucceeded { amount: 100 }, false), Some(Kind::StatusMismatch));
        assert_eq!(trade("zz", 100, &Booked::Nothing, false), Some(Kind::UnknownOrder));
        assert_eq!(refund(50, &Booked::Refunded { amount: 50 }, false), None);
        assert_eq!(refund(40, &Booked::Refunded { amount: 50 }, false), Some(Kind::AmountMismatch));
        assert_eq!(refund(50, &Booked::RefundNotPaid { amount: 50 }, false), Some(Kind::StatusMismatch));
        assert_eq!(refund(50, &Booked::Nothing, false), Some(Kind::UnknownOrder));
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn deadlines_count_working_days() {
        let calendar = WorkingCalendar::china();
        // Friday 4 December 2026, 10:00 in Beijing.
        let friday = 1_796_349_600_000;
        // One working day: the end of Monday the 7th; three: the end of Wednesday the 9th.
        // Midnight after Monday in Beijing is 16:00 UTC on Monday: 3 days and 14 hours on.
        let monday_end = friday + 3 * 86_400_000 + 14 * 3_600_000;
        assert_eq!(deadline_ms(&calendar, Kind::StatusMismatch, friday), monday_end);
        assert_eq!(deadline_ms(&calendar, Kind::ShortPayment, friday), monday_end + 2 * 86_400_000);
        assert_eq!(deadline_ms(&calendar, Kind::Duplicate, friday), friday);
    }
}
