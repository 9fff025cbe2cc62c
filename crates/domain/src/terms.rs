//! The terms a payer agrees to, in the words the payer reads: the one wording the
//! authorization page and the payer's notices share, in Chinese (the default) and English.
use crate::plan::{AmountType, ChargeMode, Plan};
use crate::usage::UsagePricing;
use crate::{Cycle, Money};

/// What a payer is charged, and when: the parts of a plan (and of the contract signed against
/// it) that the payer's consent covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub service_name: String,
    pub charge_mode: ChargeMode,
    /// The fixed cycle of fixed-cycle and hybrid terms.
    pub cycle: Option<Cycle>,
    pub amount_type: AmountType,
    /// Each cycle charge (fixed), or the most one may be (up to cap).
    pub amount: Money,
    pub per_charge_cap: Money,
    pub first_charge_at_signing: bool,
    /// How usage is priced, for usage and hybrid terms.
    pub usage: Option<UsagePricing>,
}

impl From<&Plan> for Terms {
    fn from(p: &Plan) -> Self {
        Terms {
            service_name: p.service_name.clone(),
            charge_mode: p.charge_mode,
            cycle: p.cycle,
            amount_type: p.amount_type,
            amount: p.amount,
            per_charge_cap: p.per_charge_cap,
            first_charge_at_signing: p.first_charge_at_signing,
            usage: p.usage.clone(),
        }
    }
}

impl Terms {
    /// When charges come: the cycle, the usage period, or each use.
    pub fn cycle_label(&self, en: bool) -> &'static str {
        match (self.charge_mode, self.cycle, &self.usage) {
            (ChargeMode::Usage, _, Some(u)) => u.cycle.label(en),
            (ChargeMode::EventTriggered, _, _) if en => "Each use",
            (ChargeMode::EventTriggered, _, _) => "按次",
            (_, Some(c), _) => c.label(en),
            _ if en => "Each use",
            _ => "按次",
        }
    }

    /// Every rule that decides what is charged, one sentence each: the cycle and amount of a
    /// fixed cycle; the free allowance, each priced tier and the cap of usage; per-use
    /// charging with the cap of an event-triggered plan; both parts of a hybrid.
    pub fn lines(&self, en: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let cap = self.per_charge_cap;
        if matches!(self.charge_mode, ChargeMode::FixedCycle | ChargeMode::Hybrid) {
            let cycle = self.cycle.map(|c| c.label(en)).unwrap_or_default();
            lines.push(match (self.amount_type, en) {
                (AmountType::Fixed, false) => format!("{cycle}扣款 {}", self.amount),
                (AmountType::Fixed, true) => format!("{cycle}: {}", self.amount),
                (AmountType::UpToCap, false) => format!("{cycle}扣款一次，每次不超过 {}", self.amount),
                (AmountType::UpToCap, true) => format!("{cycle}: one charge of at most {}", self.amount),
            });
            if self.first_charge_at_signing {
                lines.push(if en { "The first charge is made at signing".into() } else { "签约时扣首期".into() });
            }
        }
        if self.charge_mode == ChargeMode::EventTriggered {
            lines.push(if en {
                format!("Charged each time you use the service, at most {cap} a charge")
            } else {
                format!("按次扣费：每次使用后扣款，单笔不超过 {cap}")
            });
        }
        if let (ChargeMode::Usage | ChargeMode::Hybrid, Some(u)) = (self.charge_mode, &self.usage) {
            lines.push(if en {
                format!("{} charge for what you used that period, at most {cap}", u.cycle.label(en))
            } else {
                format!("{}按用量结算扣款一次，单笔不超过 {cap}", u.cycle.label(en))
            });
            lines.extend(tier_lines(u, cap.currency(), en));
        }
        lines
    }

    /// An example charge, in one line.
    pub fn example(&self, en: bool) -> String {
        let cycle = self.cycle.map(|c| c.label(en)).unwrap_or_default();
        let usage = self.usage.as_ref().and_then(|u| {
            // Ten units beyond the free allowance.
            let free = u.tiers.first().filter(|t| t.unit_price == 0).and_then(|t| t.up_to).unwrap_or(0);
            let quantity = free.checked_add(10)?;
            let price = Money::new(u.price(quantity)?, self.per_charge_cap.currency());
            let period = u.cycle.label(en);
            Some(if en {
                format!("{period}, {quantity} {} used: {price}", u.unit)
            } else {
                format!("{period}使用 {quantity} {}：扣款 {price}", u.unit)
            })
        });
        match (self.charge_mode, usage) {
            (ChargeMode::Usage, Some(u)) => u,
            (ChargeMode::Hybrid, Some(u)) if en => format!("{cycle} {}; {u} more", self.amount),
            (ChargeMode::Hybrid, Some(u)) => format!("{cycle} {}；{u}（另计）", self.amount),
            (ChargeMode::EventTriggered, _) if en => format!("One use, one charge of at most {}", self.per_charge_cap),
            (ChargeMode::EventTriggered, _) => format!("使用一次扣款一次，不超过 {}", self.per_charge_cap),
            _ => format!("{cycle} {}", self.amount),
        }
    }
}

/// The usage tiers, each range with its price: a free first tier is the free allowance.
fn tier_lines(u: &UsagePricing, currency: crate::Currency, en: bool) -> Vec<String> {
    let unit = &u.unit;
    let mut below = 0u64;
    let mut lines = Vec::new();
    for t in &u.tiers {
        let price = match (t.unit_price, en) {
            (0, false) => "免费".to_string(),
            (0, true) => "free".to_string(),
            (p, false) => format!("每 {unit} {}", Money::new(p, currency)),
            (p, true) => format!("{} per {unit}", Money::new(p, currency)),
        };
        let range = match (below, t.up_to, en) {
            (0, Some(up), false) => format!("前 {up} {unit}"),
            (0, Some(up), true) => format!("The first {up} {unit}"),
            (0, None, false) => "全部用量".to_string(),
            (0, None, true) => "All usage".to_string(),
            (b, None, false) => format!("超过 {b} {unit}"),
            (b, None, true) => format!("Above {b} {unit}"),
            (b, Some(up), false) => format!("第 {}–{up} {unit}", b + 1),
            (b, Some(up), true) => format!("{} to {up} {unit}", b + 1),
        };
        lines.push(if en { format!("{range}: {price}") } else { format!("{range}：{price}") });
        below = t.up_to.unwrap_or(below);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::PriceTier;

    fn fixed() -> Terms {
        Terms {
            service_name: "视频会员".into(),
            charge_mode: ChargeMode::FixedCycle,
            cycle: Some(Cycle::Monthly),
            amount_type: AmountType::Fixed,
            amount: Money::cny(1_990),
            per_charge_cap: Money::cny(1_990),
            first_charge_at_signing: false,
            usage: None,
        }
    }

    fn per_minute() -> UsagePricing {
        UsagePricing {
            unit: "minute".into(),
            tiers: vec![
                PriceTier { up_to: Some(10), unit_price: 0 },
                PriceTier { up_to: Some(100), unit_price: 50 },
                PriceTier { up_to: None, unit_price: 30 },
            ],
            grace_minutes: 60,
            cycle: Cycle::Monthly,
        }
    }

    #[test]
    fn fixed_cycle_states_cycle_and_amount() {
        assert_eq!(fixed().lines(false), ["每月扣款 19.90 CNY"]);
        assert_eq!(fixed().lines(true), ["Monthly: 19.90 CNY"]);
        assert_eq!(fixed().example(false), "每月 19.90 CNY");
        assert_eq!(fixed().cycle_label(false), "每月");
    }

    #[test]
    fn usage_states_allowance_tiers_and_cap() {
        let t = Terms {
            charge_mode: ChargeMode::Usage,
            amount_type: AmountType::UpToCap,
            per_charge_cap: Money::cny(50_000),
            amount: Money::cny(50_000),
            usage: Some(per_minute()),
            ..fixed()
        };
        assert_eq!(
            t.lines(false),
            [
                "每月按用量结算扣款一次，单笔不超过 500.00 CNY",
                "前 10 minute：免费",
                "第 11–100 minute：每 minute 0.50 CNY",
                "超过 100 minute：每 minute 0.30 CNY",
            ]
        );
        assert_eq!(t.lines(true)[1], "The first 10 minute: free");
        assert_eq!(t.lines(true)[3], "Above 100 minute: 0.30 CNY per minute");
        assert_eq!(t.example(false), "每月使用 20 minute：扣款 5.00 CNY");
        // Nowhere is the cap presented as the monthly charge.
        assert!(t.lines(false).iter().all(|l| !l.starts_with("每月扣款")));
    }

    #[test]
    fn triggered_states_per_use_and_cap() {
        let t = Terms {
            charge_mode: ChargeMode::EventTriggered,
            cycle: None,
            amount_type: AmountType::UpToCap,
            amount: Money::cny(5_000),
            per_charge_cap: Money::cny(5_000),
            ..fixed()
        };
        assert_eq!(t.lines(false), ["按次扣费：每次使用后扣款，单笔不超过 50.00 CNY"]);
        assert_eq!(t.cycle_label(true), "Each use");
    }

    #[test]
    fn hybrid_states_both() {
        let t = Terms {
            charge_mode: ChargeMode::Hybrid,
            cycle: Some(Cycle::Yearly),
            amount: Money::cny(120_000),
            per_charge_cap: Money::cny(120_000),
            first_charge_at_signing: true,
            usage: Some(UsagePricing { unit: "GB".into(), ..per_minute() }),
            ..fixed()
        };
        let lines = t.lines(false);
        assert_eq!(
            lines[..3],
            ["每年扣款 1200.00 CNY", "签约时扣首期", "每月按用量结算扣款一次，单笔不超过 1200.00 CNY"]
        );
        assert_eq!(lines[3], "前 10 GB：免费");
        assert_eq!(t.example(true), "Yearly 1200.00 CNY; Monthly, 20 GB used: 5.00 CNY more");
    }
}
