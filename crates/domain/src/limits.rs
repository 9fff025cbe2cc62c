//! The limits a charge must keep when it is issued, and their defaults. Pure: the caller
//! supplies what the contract has already been charged today.
use crate::plan::MAX_DAILY_COUNT;
use crate::{MAX_CHARGE_CNY_FEN, Money, Timestamp};
use chrono::TimeDelta;

/// The per-charge cap of a contract whose plan names none: the platform maximum.
pub const DEFAULT_PER_CHARGE_CAP: i64 = MAX_CHARGE_CNY_FEN;
/// The daily charge count of a contract whose plan names none: the platform maximum.
pub const DEFAULT_DAILY_COUNT: u32 = MAX_DAILY_COUNT;
/// A contract whose plan names no daily amount may be charged this many times its monthly
/// average in a day, once it has a month of history.
pub const DAILY_AMOUNT_MONTHLY_MULTIPLE: i64 = 3;
/// The month that monthly averages count in.
pub const HISTORY_MONTH: TimeDelta = TimeDelta::days(30);

/// The limits a plan sets; `None` where it sets none (the defaults apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanLimits {
    pub per_charge_cap: Option<i64>,
    pub daily_count: Option<u32>,
    pub daily_amount: Option<i64>,
}

/// A contract's limits, from its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_charge_cap: i64,
    pub daily_count: u32,
    /// `None`: no daily amount limit yet (a contract without history under a plan that sets none).
    pub daily_amount: Option<i64>,
}

/// What the contract was charged today (calendar day, merchant's time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Today {
    pub count: u32,
    pub amount: i64,
}

/// Which rule a charge breaks, with the figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct Breach {
    pub rule: &'static str,
    pub detail: String,
}

/// Whether `amount` may be charged now.
pub fn check(amount: Money, limits: &Limits, today: Today) -> Result<(), Breach> {
    let units = amount.minor_units();
    let cap = limits.per_charge_cap.min(MAX_CHARGE_CNY_FEN);
    if units > cap {
        return Err(Breach { rule: "per_charge_cap", detail: format!("{units} > cap {cap} ({})", amount.currency()) });
    }
    let daily_count = limits.daily_count.min(MAX_DAILY_COUNT);
    if today.count + 1 > daily_count {
        return Err(Breach {
            rule: "daily_count",
            detail: format!("charge {} of the day > limit {daily_count}", today.count + 1),
        });
    }
    if let Some(daily) = limits.daily_amount {
        if today.amount.saturating_add(units) > daily {
            return Err(Breach {
                rule: "daily_amount",
                detail: format!("{} already charged today + {units} > daily limit {daily}", today.amount),
            });
        }
    }
    Ok(())
}

/// A suspended merchant charges nothing: each charge it would issue meanwhile is refused,
/// not kept for after its reinstatement.
pub fn check_merchant(suspended: bool) -> Result<(), Breach> {
    if suspended {
        return Err(Breach {
            rule: "merchant_suspended",
            detail: "the merchant is suspended; no charge is made until it is reinstated".into(),
        });
    }
    Ok(())
}

/// A merchant whose charging is frozen (a missed unauthorized-charge complaint deadline, or a
/// credit score below the charging floor) charges nothing until it is lifted.
pub fn check_frozen(frozen: bool) -> Result<(), Breach> {
    if frozen {
        return Err(Breach {
            rule: "charging_frozen",
            detail: "the merchant's charging is frozen (a missed complaint deadline or a low credit score)".into(),
        });
    }
    Ok(())
}

/// The default daily amount limit: three times the contract's monthly average, once it has
/// a month of history.
pub fn default_daily_amount(total_charged: i64, months_of_history: i64) -> Option<i64> {
    (months_of_history >= 1).then(|| total_charged / months_of_history * DAILY_AMOUNT_MONTHLY_MULTIPLE)
}

/// A contract's limits at `now`: its plan's (`None`: it has no plan), each default where the
/// plan sets none; the daily amount defaults from the contract's successful charges so far
/// and the time of its first.
pub fn for_contract(
    plan: Option<PlanLimits>,
    total_succeeded: i64,
    first_success_at: Option<Timestamp>,
    now: Timestamp,
) -> Limits {
    let plan = plan.unwrap_or_default();
    let months =
        first_success_at.map_or(0, |first| (now - first).num_milliseconds() / HISTORY_MONTH.num_milliseconds());
    Limits {
        per_charge_cap: plan.per_charge_cap.filter(|c| *c > 0).unwrap_or(DEFAULT_PER_CHARGE_CAP),
        daily_count: plan.daily_count.filter(|c| *c > 0).unwrap_or(DEFAULT_DAILY_COUNT),
        daily_amount: plan.daily_amount.filter(|d| *d > 0).or_else(|| default_daily_amount(total_succeeded, months)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_the_rule_and_figures() {
        let l = Limits { per_charge_cap: 1_000, daily_count: 2, daily_amount: Some(1_500) };
        assert_eq!(check(Money::cny(1_001), &l, Today::default()).unwrap_err().rule, "per_charge_cap");
        assert_eq!(check(Money::cny(100), &l, Today { count: 2, amount: 200 }).unwrap_err().rule, "daily_count");
        let e = check(Money::cny(600), &l, Today { count: 1, amount: 1_000 }).unwrap_err();
        assert_eq!(e.rule, "daily_amount");
        assert!(e.detail.contains("1500"), "{e}");
        assert!(check(Money::cny(500), &l, Today { count: 1, amount: 1_000 }).is_ok());
        assert_eq!(default_daily_amount(6_000, 2), Some(9_000));
        assert_eq!(default_daily_amount(6_000, 0), None);
        assert_eq!(check_merchant(true).unwrap_err().rule, "merchant_suspended");
        assert!(check_merchant(false).is_ok());
    }

    #[test]
    fn defaults_fill_in_what_the_plan_leaves_out() {
        let now = crate::clock::from_millis(0) + TimeDelta::days(95);
        let first = Some(crate::clock::from_millis(0));
        let none = for_contract(None, 0, None, now);
        assert_eq!(
            none,
            Limits { per_charge_cap: MAX_CHARGE_CNY_FEN, daily_count: MAX_DAILY_COUNT, daily_amount: None }
        );
        // Three months of history, 9,000 charged: three times the monthly average of 3,000.
        assert_eq!(for_contract(None, 9_000, first, now).daily_amount, Some(9_000));
        let plan = PlanLimits { per_charge_cap: Some(1_990), daily_count: Some(2), daily_amount: Some(5_000) };
        assert_eq!(
            for_contract(Some(plan), 9_000, first, now),
            Limits { per_charge_cap: 1_990, daily_count: 2, daily_amount: Some(5_000) }
        );
        // Zeros are "not set".
        let zeros = PlanLimits { per_charge_cap: Some(0), daily_count: Some(0), daily_amount: Some(0) };
        assert_eq!(for_contract(Some(zeros), 0, None, now), none);
        // Less than a month of history: no default daily amount yet.
        assert_eq!(for_contract(None, 9_000, first, first.unwrap() + TimeDelta::days(29)).daily_amount, None);
    }

    proptest! {
        /// Charges accepted one after another never exceed any limit, whatever the plan says.
        #[test]
        fn accepted_charges_keep_every_limit(
            amounts in proptest::collection::vec(1i64..6_000_000, 1..40),
            cap in 1i64..8_000_000,
            count in 0u32..20,
            daily in proptest::option::of(1i64..20_000_000),
        ) {
            let l = Limits { per_charge_cap: cap, daily_count: count, daily_amount: daily };
            let mut today = Today::default();
            for a in amounts {
                if check(Money::cny(a), &l, today).is_ok() {
                    prop_assert!(a <= cap.min(MAX_CHARGE_CNY_FEN));
                    today.count += 1;
                    today.amount += a;
                }
            }
            prop_assert!(today.count <= count.min(10));
            if let Some(d) = daily {
                prop_assert!(today.amount <= d);
            }
        }
    }
}
