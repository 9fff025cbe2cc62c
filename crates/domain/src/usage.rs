//! Metered pricing: what a usage period's total quantity costs, under graduated tiers.
use crate::Cycle;

/// One tier: quantities up to `up_to` (inclusive, counted over the period; `None` = no bound)
/// cost `unit_price` minor units each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceTier {
    pub up_to: Option<u64>,
    pub unit_price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePricing {
    pub unit: String,
    pub tiers: Vec<PriceTier>,
    /// How long after a period ends late usage still counts in it.
    pub grace_minutes: u32,
    /// The usage period.
    pub cycle: Cycle,
}

/// The grace window when a plan names none.
pub const DEFAULT_GRACE_MINUTES: u32 = 60;
/// The longest grace window: late usage must be billed within a day.
pub const MAX_GRACE_MINUTES: u32 = 24 * 60;
/// How far in the future a usage record's time may lie (clock skew between systems).
pub const MAX_RECORD_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PricingError {
    pub field: &'static str,
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> PricingError {
    PricingError { field, problem: problem.into() }
}

impl UsagePricing {
    pub fn validate(&self) -> Result<(), PricingError> {
        let unit = self.unit.chars().count();
        if unit == 0 || unit > 32 {
            return Err(err("usage.unit", "must be 1 to 32 characters"));
        }
        if self.tiers.is_empty() || self.tiers.len() > 10 {
            return Err(err("usage.tiers", "must have 1 to 10 tiers"));
        }
        let mut floor = 0u64;
        for (i, t) in self.tiers.iter().enumerate() {
            if t.unit_price < 0 {
                return Err(err("usage.tiers.unit_price", format!("tier {} is negative", i + 1)));
            }
            match t.up_to {
                Some(up) if up <= floor && !(i == 0 && up > 0) => {
                    return Err(err("usage.tiers.up_to", format!("tier {} must go above {floor}", i + 1)));
                }
                Some(_) if i + 1 == self.tiers.len() => {
                    return Err(err("usage.tiers.up_to", "the last tier must be unbounded (up_to 0)"));
                }
                None if i + 1 != self.tiers.len() => {
                    return Err(err(
                        "usage.tiers.up_to",
                        format!("only the last tier may be unbounded, not tier {}", i + 1),
                    ));
                }
                Some(up) => floor = up,
                None => {}
            }
        }
        if self.grace_minutes > MAX_GRACE_MINUTES {
            return Err(err("usage.grace_minutes", format!("must be at most {MAX_GRACE_MINUTES} (a day)")));
        }
        Ok(())
    }

    /// What `quantity` units cost over one period, in minor units; `None` on overflow.
    pub fn price(&self, quantity: u64) -> Option<i64> {
        let mut total: i64 = 0;
        let mut below = 0u64;
        for t in &self.tiers {
            if quantity <= below {
                break;
            }
            let top = t.up_to.map_or(quantity, |u| u.min(quantity));
            let units = i64::try_from(top - below).ok()?;
            total = total.checked_add(units.checked_mul(t.unit_price)?)?;
            below = top;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pricing() -> UsagePricing {
        UsagePricing {
            unit: "minute".into(),
            tiers: vec![
                PriceTier { up_to: Some(100), unit_price: 0 },
                PriceTier { up_to: Some(1_000), unit_price: 50 },
                PriceTier { up_to: None, unit_price: 30 },
            ],
            grace_minutes: 60,
            cycle: Cycle::Monthly,
        }
    }

    #[test]
    fn graduated_tiers() {
        let p = pricing();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.price(0), Some(0));
        assert_eq!(p.price(100), Some(0));
        assert_eq!(p.price(101), Some(50));
        assert_eq!(p.price(1_000), Some(900 * 50));
        assert_eq!(p.price(1_010), Some(900 * 50 + 10 * 30));
        assert_eq!(p.price(u64::MAX), None);
    }

    #[test]
    fn malformed_tiers_name_the_field() {
        let mut p = pricing();
        p.tiers[1].up_to = Some(50);
        assert_eq!(p.validate().unwrap_err().field, "usage.tiers.up_to");
        let mut p = pricing();
        p.tiers[2].up_to = Some(5_000);
        assert_eq!(p.validate().unwrap_err().field, "usage.tiers.up_to");
        let mut p = pricing();
        p.tiers[0].unit_price = -1;
        assert_eq!(p.validate().unwrap_err().field, "usage.tiers.unit_price");
        let mut p = pricing();
        p.unit.clear();
        assert_eq!(p.validate().unwrap_err().field, "usage.unit");
    }

    proptest! {
        /// More usage never costs less, and splitting nothing off changes nothing.
        #[test]
        fn price_is_monotonic(a in 0u64..10_000_000, b in 0u64..10_000_000) {
            let p = pricing();
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(p.price(lo).unwrap() <= p.price(hi).unwrap());
        }
    }
}
