//! Settlement: what a merchant is paid for its charges less its refunds, the platform's fee
//! and the profit-sharing splits, batched per merchant and currency on working days.
//!
//! A succeeded charge is due for settlement on the first working day after the day it
//! succeeded (T+1, Beijing time), or the third for a cross-border currency (T+3, anything but
//! CNY); so is a succeeded refund, which the merchant bears. A batch holds every item due by
//! its day and not yet in a batch; it closes once and never changes.
use crate::calendar::WorkingCalendar;
use chrono::NaiveDate;

/// The settlement currency; charges in any other settle T+3.
pub const HOME_CURRENCY: &str = "CNY";

/// Working days from the day an item succeeded to the day it is due for settlement.
pub fn settlement_lag_days(currency: &str) -> u32 {
    if currency == HOME_CURRENCY { 1 } else { 3 }
}

/// The day an item that succeeded on `day` (the merchant's local date) is settled.
pub fn due_on(calendar: &WorkingCalendar, day: NaiveDate, currency: &str) -> NaiveDate {
    calendar.add_working_days(day, settlement_lag_days(currency))
}

/// The fee on `amount` at `basis_points`, rounded half up to a minor unit.
pub fn fee(amount: i64, basis_points: u32) -> i64 {
    let product = i128::from(amount) * i128::from(basis_points);
    i64::try_from((product + 5_000).div_euclid(10_000)).unwrap_or(i64::MAX)
}

/// The fee rate of an industry when the operator has set none, in basis points: the platform's
/// default per the domain's figures (paid content 0.6%–1.2%, charity 0).
pub fn default_fee_basis_points(industry: &str) -> u32 {
    match industry {
        "charity" => 0,
        "paid_content" => 100,
        _ => 60,
    }
}

/// The highest fee rate the operator may set: 10%.
pub const MAX_FEE_BASIS_POINTS: u32 = 1_000;

/// The VAT rate a receipt states for an industry's services, in basis points: 6% for the
/// modern services the platform's merchants sell, none for charity.
pub fn vat_basis_points(industry: &str) -> u32 {
    if industry == "charity" { 0 } else { 600 }
}

/// The VAT an amount that includes it at `basis_points` holds, rounded half up.
pub fn vat_included(amount: i64, basis_points: u32) -> i64 {
    let (a, bp) = (i128::from(amount), i128::from(basis_points));
    let whole = 10_000 + bp;
    i64::try_from((2 * a * bp + whole).div_euclid(2 * whole)).unwrap_or(0)
}

/// One receiver's share of each charge: a rate of the charge's amount or a fixed amount, at
/// most `cap` (0: no cap). Rules apply in order, each to what the fee and the rules before it
/// left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitRule {
    pub receiver: String,
    pub basis_points: u32,
    pub fixed: i64,
    pub cap: i64,
}

/// What can be wrong with a merchant's split rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SplitRuleError {
    pub field: String,
    pub problem: String,
}

/// At most this many receivers per merchant.
pub const MAX_SPLIT_RULES: usize = 10;

pub fn validate_split_rules(rules: &[SplitRule]) -> Result<(), SplitRuleError> {
    let err = |i: usize, f: &str, p: &str| SplitRuleError { field: format!("rules[{i}].{f}"), problem: p.into() };
    if rules.len() > MAX_SPLIT_RULES {
        return Err(SplitRuleError { field: "rules".into(), problem: format!("at most {MAX_SPLIT_RULES} receivers") });
    }
    let mut rate = 0u32;
    for (i, r) in rules.iter().enumerate() {
        if r.receiver.is_empty() || r.receiver.len() > 64 || r.receiver.chars().any(char::is_control) {
            return Err(err(i, "receiver", "1 to 64 characters, none of them control characters"));
        }
        if rules[..i].iter().any(|o| o.receiver == r.receiver) {
            return Err(err(i, "receiver", "each receiver once"));
        }
        match (r.basis_points, r.fixed) {
            (0, 0) => return Err(err(i, "basis_points", "give a rate or a fixed amount")),
            (b, f) if b > 0 && f > 0 => return Err(err(i, "fixed", "a rate or a fixed amount, not both")),
            (_, f) if f < 0 => return Err(err(i, "fixed", "must not be negative")),
            _ => {}
        }
        if r.cap < 0 {
            return Err(err(i, "cap", "must not be negative (0: no cap)"));
        }
        rate += r.basis_points;
        if rate > 10_000 {
            return Err(err(i, "basis_points", "the rates add up to more than 100%"));
        }
    }
    Ok(())
}

/// The splits of a charge of `amount` after its `fee`, in rule order; never more than is left.
pub fn splits(amount: i64, fee: i64, rules: &[SplitRule]) -> Vec<(String, i64)> {
    let mut left = (amount - fee).max(0);
    let mut out = Vec::new();
    for r in rules {
        let mut want = if r.fixed > 0 { r.fixed } else { amount * i64::from(r.basis_points) / 10_000 };
        if r.cap > 0 {
            want = want.min(r.cap);
        }
        let take = want.min(left);
        if take > 0 {
            out.push((r.receiver.clone(), take));
            left -= take;
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Charge,
    Refund,
}

/// A succeeded charge or refund waiting for its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The charge's or the refund's id.
    pub id: String,
    pub kind: ItemKind,
    /// The charge it is (or refunds).
    pub charge_id: String,
    /// Positive, in minor units.
    pub amount: i64,
}

/// An item as settled: its amount (negative for a refund), fee, splits and what the merchant
/// gets (`net`); `amount = fee + splits + net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub item_id: String,
    pub kind: ItemKind,
    pub charge_id: String,
    pub amount: i64,
    pub fee: i64,
    pub splits: Vec<(String, i64)>,
    pub net: i64,
}

/// A batch's sums: gross (charges), refunds (positive), fees, splits, net (what is paid out,
/// negative when refunds outweigh charges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub gross: i64,
    pub refunds: i64,
    pub fees: i64,
    pub splits: i64,
    pub net: i64,
}

/// Settles `items` at the merchant's fee rate and split rules. A charge pays the fee and the
/// splits; a refund is taken from the merchant's net whole.
pub fn settle(items: &[Item], fee_basis_points: u32, rules: &[SplitRule]) -> (Vec<Line>, Totals) {
    let mut totals = Totals::default();
    let lines: Vec<Line> = items
        .iter()
        .map(|it| match it.kind {
            ItemKind::Charge => {
                let f = fee(it.amount, fee_basis_points).min(it.amount);
                let s = splits(it.amount, f, rules);
                let split_sum: i64 = s.iter().map(|(_, a)| a).sum();
                let net = it.amount - f - split_sum;
                totals.gross += it.amount;
                totals.fees += f;
                totals.splits += split_sum;
                totals.net += net;
                Line {
                    item_id: it.id.clone(),
                    kind: it.kind,
                    charge_id: it.charge_id.clone(),
                    amount: it.amount,
                    fee: f,
                    splits: s,
                    net,
                }
            }
            ItemKind::Refund => {
                totals.refunds += it.amount;
                totals.net -= it.amount;
                Line {
                    item_id: it.id.clone(),
                    kind: it.kind,
                    charge_id: it.charge_id.clone(),
                    amount: -it.amount,
                    fee: 0,
                    splits: Vec::new(),
                    net: -it.amount,
                }
            }
        })
        .collect();
    (lines, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn t_plus_one_at_home_and_t_plus_three_across_borders() {
        let c = WorkingCalendar::china();
        assert_eq!(due_on(&c, day("2026-12-04"), "CNY"), day("2026-12-07"), "Friday to Monday");
        assert_eq!(due_on(&c, day("2026-12-04"), "USD"), day("2026-12-09"));
        assert_eq!(due_on(&c, day("2026-09-30"), "CNY"), day("2026-10-08"), "after National Day");
    }

    #[test]
    fn vat_is_taken_out_of_the_amount() {
        // 19.90 at 6%: 19.90 / 1.06 = 18.77, VAT 1.13 (1.1264…).
        assert_eq!(vat_included(1_990, 600), 113);
        assert_eq!(vat_included(106, 600), 6);
        assert_eq!(vat_included(1_990, 0), 0);
        assert_eq!(vat_basis_points("charity"), 0);
    }

    #[test]
    fn fees_round_half_up() {
        assert_eq!(fee(1_990, 60), 12, "11.94 fen");
        assert_eq!(fee(2_500, 60), 15);
        assert_eq!(fee(250, 100), 3, "2.5 fen rounds up");
        assert_eq!(fee(1_990, 0), 0);
        assert_eq!(default_fee_basis_points("charity"), 0);
    }

    #[test]
    fn splits_in_order_capped_and_never_more_than_is_left() {
        let rules = vec![
            SplitRule { receiver: "agent".into(), basis_points: 1_000, fixed: 0, cap: 150 },
            SplitRule { receiver: "partner".into(), basis_points: 0, fixed: 500, cap: 0 },
            SplitRule { receiver: "last".into(), basis_points: 9_500, fixed: 0, cap: 0 },
        ];
        // 2,000 fen, fee 12: agent 10% = 200 capped at 150; partner 500; last 95% = 1,900 but
        // only 1,338 is left.
        assert_eq!(
            splits(2_000, 12, &rules),
            vec![("agent".into(), 150), ("partner".into(), 500), ("last".into(), 1_338)]
        );
        assert_eq!(validate_split_rules(&rules).unwrap_err().field, "rules[2].basis_points", "105% in all");
        assert!(validate_split_rules(&rules[..2]).is_ok());
        let both = SplitRule { receiver: "x".into(), basis_points: 1, fixed: 1, cap: 0 };
        assert_eq!(validate_split_rules(&[both]).unwrap_err().field, "rules[0].fixed");
    }

    proptest! {
        /// Every line and the totals add up: amount = fee + splits + net, nothing negative but
        /// a refund's net.
        #[test]
        fn lines_add_up(
            amounts in proptest::collection::vec((1i64..1_000_000, any::<bool>()), 0..40),
            bp in 0u32..=MAX_FEE_BASIS_POINTS,
            rate in 0u32..=5_000,
            fixed in 0i64..5_000,
            cap in 0i64..10_000,
        ) {
            let items: Vec<Item> = amounts.iter().enumerate().map(|(i, (a, refund))| Item {
                id: format!("i{i}"),
                kind: if *refund { ItemKind::Refund } else { ItemKind::Charge },
                charge_id: format!("c{i}"),
                amount: *a,
            }).collect();
            let rules = vec![
                SplitRule { receiver: "a".into(), basis_points: rate, fixed: 0, cap },
                SplitRule { receiver: "b".into(), basis_points: 0, fixed, cap: 0 },
            ];
            let (lines, t) = settle(&items, bp, &rules);
            for l in &lines {
                let s: i64 = l.splits.iter().map(|(_, a)| a).sum();
                prop_assert_eq!(l.amount, l.fee + s + l.net);
                if l.kind == ItemKind::Charge {
                    prop_assert!(l.fee >= 0 && s >= 0 && l.net >= 0);
                }
            }
            prop_assert_eq!(t.gross - t.refunds, t.fees + t.splits + t.net);
            prop_assert_eq!(lines.iter().map(|l| l.amount).sum::<i64>(), t.gross - t.refunds);
        }
    }
}
