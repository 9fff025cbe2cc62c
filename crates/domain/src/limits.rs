//! The limits a charge must keep when it is issued. Pure: the caller supplies what the
//! contract has already been charged today.
use crate::{MAX_CHARGE_CNY_FEN, Money};

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
    let daily_count = limits.daily_count.min(crate::plan::MAX_DAILY_COUNT);
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

/// The default daily amount limit: three times the contract's monthly average, once it has
/// a month of history.
pub fn default_daily_amount(total_charged: i64, months_of_history: i64) -> Option<i64> {
    (months_of_history >= 1).then(|| total_charged / months_of_history * 3)
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
