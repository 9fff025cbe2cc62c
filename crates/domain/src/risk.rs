//! Charge-time risk: the "during" level of control. A charge far above what its contract
//! usually takes is held before it reaches the provider, until the payer confirms it (a
//! credential on a hosted step-up page) or an operator approves it; neither within
//! [`HOLD_EXPIRY`] and it is rejected. Pure: the caller supplies the contract's history.
//!
//! The rule (`charge_over_mean`): hold a charge whose amount exceeds `threshold_percent` of
//! the contract's historical mean — the mean of its succeeded charges, or, before it has any,
//! the amount its terms expect (the amount per cycle). The terms' amount is also a floor of
//! the mean: a charge of what the payer agreed to (after a change of terms they were told of,
//! say) is never outsized. A contract with no basis (no history and no expected amount, as a
//! usage contract priced only by usage) is never held by it. The platform's threshold is 200%; a merchant or plan may make it stricter, never
//! looser ([`threshold_within_floor`]).
use crate::Timestamp;
use chrono::TimeDelta;

/// The rule's name, as events and the audit name it.
pub const CHARGE_OVER_MEAN: &str = "charge_over_mean";
/// The platform's threshold: a charge above this percentage of the historical mean is held.
pub const DEFAULT_MEAN_THRESHOLD_PERCENT: u32 = 200;
/// The strictest threshold a merchant or plan may set: anything at or below the mean itself
/// would hold ordinary charges.
pub const MIN_MEAN_THRESHOLD_PERCENT: u32 = 110;
/// How long a held charge waits for the payer's confirmation or an operator's approval.
pub const HOLD_EXPIRY: TimeDelta = TimeDelta::hours(48);
/// The rule a held charge is rejected under when nobody released it in time.
pub const HOLD_EXPIRED: &str = "risk_hold_expired";
/// The rule a held charge is rejected under when an operator refused it.
pub const REVIEW_REJECTED: &str = "risk_review_rejected";
/// The rule a held charge is rejected under when the payer declined it on the step-up page.
pub const PAYER_DECLINED: &str = "risk_payer_declined";

/// What the rule looked at: the charge and the contract's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeFacts {
    /// The charge, in minor units.
    pub amount: i64,
    /// The contract's succeeded charges: their sum and how many.
    pub succeeded_total: i64,
    pub succeeded_count: u32,
    /// What the contract's terms expect each charge to be (0: nothing).
    pub expected: i64,
    /// The threshold in force (a percentage of the mean).
    pub threshold_percent: u32,
}

impl ChargeFacts {
    /// The mean the charge is held against: of the history, or the expected amount when that
    /// is larger (or there is no history). `None`: no basis.
    pub fn mean(&self) -> Option<i64> {
        let history = if self.succeeded_count > 0 { self.succeeded_total / i64::from(self.succeeded_count) } else { 0 };
        let mean = history.max(self.expected);
        (mean > 0).then_some(mean)
    }
}

/// Why a charge is held: the rule, its inputs, and the words for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldReason {
    pub rule: String,
    pub detail: String,
    pub mean: i64,
    pub threshold_percent: u32,
    pub history_count: u32,
}

/// Whether the charge is held, and why.
pub fn check_charge(f: &ChargeFacts) -> Option<HoldReason> {
    let mean = f.mean()?;
    let threshold = threshold_within_floor(f.threshold_percent);
    // amount > mean × threshold / 100, in integers.
    if i128::from(f.amount) * 100 <= i128::from(mean) * i128::from(threshold) {
        return None;
    }
    let basis = if mean > f.expected {
        format!("the mean of its {} succeeded charges", f.succeeded_count)
    } else {
        "the amount its terms expect".to_string()
    };
    Some(HoldReason {
        rule: CHARGE_OVER_MEAN.to_string(),
        detail: format!("{} > {threshold}% of {mean}, {basis}", f.amount),
        mean,
        threshold_percent: threshold,
        history_count: if mean > f.expected { f.succeeded_count } else { 0 },
    })
}

/// A threshold as set (0: not set) kept within the platform's bounds: never looser than the
/// platform's, never so strict it holds ordinary charges.
pub fn threshold_within_floor(asked: u32) -> u32 {
    if asked == 0 {
        DEFAULT_MEAN_THRESHOLD_PERCENT
    } else {
        asked.clamp(MIN_MEAN_THRESHOLD_PERCENT, DEFAULT_MEAN_THRESHOLD_PERCENT)
    }
}

/// Who released a held charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Releaser {
    /// The payer, with their credential on the step-up page.
    Payer,
    /// An operator's review (`ReviewHeldCharge`).
    Operator,
}

impl Releaser {
    pub fn as_str(self) -> &'static str {
        match self {
            Releaser::Payer => "payer",
            Releaser::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Releaser> {
        match s {
            "payer" => Some(Releaser::Payer),
            "operator" => Some(Releaser::Operator),
            _ => None,
        }
    }
}

// === rules as data ===

/// A rule's setting that operators and merchants may change within the platform's bounds: its
/// name (`rule.setting`), the platform's value, and the strictest and loosest values allowed.
/// The loosest is the platform's floor of control: no merchant or plan goes below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// The rule it belongs to, as decisions name it.
    pub rule: &'static str,
    pub platform: i64,
    pub strictest: i64,
    pub loosest: i64,
    pub about: &'static str,
}

impl Setting {
    /// Whether `value` lies between the strictest and the loosest.
    pub fn allows(&self, value: i64) -> bool {
        (self.strictest.min(self.loosest)..=self.strictest.max(self.loosest)).contains(&value)
    }
}

/// The charge-time rule's threshold.
pub const THRESHOLD_PERCENT: &str = "charge_over_mean.threshold_percent";
/// The sign-time device rule: how many payer accounts one device may sign for, and in what window.
pub const DEVICE_MAX_ACCOUNTS: &str = "device_accounts.max_accounts";
pub const DEVICE_WINDOW_HOURS: &str = "device_accounts.window_hours";
/// The sign-time rule names, as decisions name them.
pub const DEVICE_ACCOUNTS: &str = "device_accounts";
pub const REGION_CHANGE: &str = "region_change";

/// Every setting there is.
pub const SETTINGS: [Setting; 3] = [
    Setting {
        name: THRESHOLD_PERCENT,
        rule: CHARGE_OVER_MEAN,
        platform: DEFAULT_MEAN_THRESHOLD_PERCENT as i64,
        strictest: MIN_MEAN_THRESHOLD_PERCENT as i64,
        loosest: DEFAULT_MEAN_THRESHOLD_PERCENT as i64,
        about: "a charge above this percentage of its contract's mean is held until released",
    },
    Setting {
        name: DEVICE_MAX_ACCOUNTS,
        rule: DEVICE_ACCOUNTS,
        platform: crate::signing::MAX_ACCOUNTS_PER_DEVICE as i64,
        strictest: 1,
        loosest: crate::signing::MAX_ACCOUNTS_PER_DEVICE as i64,
        about: "a device that signed for more payer accounts than this within the window holds the session for review",
    },
    Setting {
        name: DEVICE_WINDOW_HOURS,
        rule: DEVICE_ACCOUNTS,
        platform: crate::signing::DEVICE_WINDOW_HOURS,
        strictest: 168,
        loosest: crate::signing::DEVICE_WINDOW_HOURS,
        about: "the hours the device's payer accounts are counted over",
    },
];

pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Where a setting applies: the whole platform, one merchant, or one plan (the most specific
/// set one wins).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Platform,
    Merchant(String),
    Plan(String),
}

impl Scope {
    /// The key rules are stored under: `platform`, `merchant:<id>`, `plan:<id>`.
    pub fn key(&self) -> String {
        match self {
            Scope::Platform => "platform".into(),
            Scope::Merchant(m) => format!("merchant:{m}"),
            Scope::Plan(p) => format!("plan:{p}"),
        }
    }
}

/// A setting's value in force for a plan of a merchant: the plan's if set, else the merchant's,
/// else the platform's as set, else the platform's own — always within the bounds.
pub fn effective(s: &Setting, plan: Option<i64>, merchant: Option<i64>, platform: Option<i64>) -> i64 {
    [plan, merchant, platform].into_iter().flatten().find(|v| s.allows(*v)).unwrap_or(s.platform)
}

/// Why a rule setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("unknown setting {0:?} (known: {known})", known = SETTINGS.map(|s| s.name).join(", "))]
    UnknownSetting(String),
    #[error("{value} is outside {name}'s bounds: from {strictest} (strictest) to {loosest} (the platform's floor)")]
    OutOfBounds { name: &'static str, value: i64, strictest: i64, loosest: i64 },
}

/// The setting named, if `value` (0: clear the scope's value) is allowed for it.
pub fn check_rule(name: &str, value: i64) -> Result<&'static Setting, RuleError> {
    let s = setting(name).ok_or_else(|| RuleError::UnknownSetting(name.to_string()))?;
    if value != 0 && !s.allows(value) {
        return Err(RuleError::OutOfBounds { name: s.name, value, strictest: s.strictest, loosest: s.loosest });
    }
    Ok(s)
}

/// When a charge held at `held_at` is rejected if nobody releases it.
pub fn hold_expires_at(held_at: Timestamp) -> Timestamp {
    held_at + HOLD_EXPIRY
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn facts(amount: i64, total: i64, count: u32, expected: i64) -> ChargeFacts {
        ChargeFacts { amount, succeeded_total: total, succeeded_count: count, expected, threshold_percent: 0 }
    }

    #[test]
    fn holds_above_twice_the_mean_of_the_history() {
        // Mean 1,000 over three charges: 2,000 passes, 2,001 is held.
        assert_eq!(check_charge(&facts(2_000, 3_000, 3, 500)), None);
        let held = check_charge(&facts(2_001, 3_000, 3, 500)).unwrap();
        assert_eq!(
            (held.rule.as_str(), held.mean, held.threshold_percent, held.history_count),
            (CHARGE_OVER_MEAN, 1_000, 200, 3)
        );
        assert_eq!(held.detail, "2001 > 200% of 1000, the mean of its 3 succeeded charges");
    }

    #[test]
    fn the_terms_amount_is_a_floor_of_the_mean() {
        // Terms raised to 7,000 after two charges of 2,500: a charge of 7,000 is as agreed.
        assert_eq!(check_charge(&facts(7_000, 5_000, 2, 7_000)), None);
        let held = check_charge(&facts(14_001, 5_000, 2, 7_000)).unwrap();
        assert_eq!((held.mean, held.history_count), (7_000, 0));
    }

    #[test]
    fn before_any_history_the_expected_amount_is_the_mean() {
        assert_eq!(check_charge(&facts(1_000, 0, 0, 500)), None);
        let held = check_charge(&facts(1_001, 0, 0, 500)).unwrap();
        assert_eq!(held.mean, 500);
        assert!(held.detail.ends_with("the amount its terms expect"));
        // No history and nothing expected: no basis, never held.
        assert_eq!(check_charge(&facts(1_000_000, 0, 0, 0)), None);
    }

    #[test]
    fn a_threshold_may_be_stricter_but_never_looser_than_the_platforms() {
        let mut f = facts(1_600, 1_000, 1, 0);
        assert_eq!(check_charge(&f), None);
        f.threshold_percent = 150;
        assert_eq!(check_charge(&f).unwrap().threshold_percent, 150);
        f.threshold_percent = 500;
        f.amount = 2_500;
        assert_eq!(check_charge(&f).unwrap().threshold_percent, 200, "500% is held to the platform's 200%");
        f.threshold_percent = 1;
        f.amount = 1_050;
        assert_eq!(check_charge(&f), None, "1% is raised to the strictest allowed, 110%");
        assert_eq!(threshold_within_floor(0), DEFAULT_MEAN_THRESHOLD_PERCENT);
    }

    #[test]
    fn the_hold_expires_after_48_hours() {
        let at = crate::clock::from_millis(1_000);
        assert_eq!((hold_expires_at(at) - at).num_hours(), 48);
    }

    #[test]
    fn settings_are_checked_against_their_bounds_and_the_most_specific_wins() {
        assert!(check_rule(THRESHOLD_PERCENT, 150).is_ok());
        assert!(check_rule(THRESHOLD_PERCENT, 0).is_ok(), "0 clears");
        let e = check_rule(THRESHOLD_PERCENT, 250).unwrap_err();
        assert_eq!(
            e.to_string(),
            "250 is outside charge_over_mean.threshold_percent's bounds: from 110 (strictest) to 200 (the platform's floor)"
        );
        assert!(check_rule(DEVICE_WINDOW_HOURS, 72).is_ok());
        assert!(check_rule(DEVICE_WINDOW_HOURS, 12).is_err(), "a shorter window is looser");
        assert!(matches!(check_rule("nope", 1), Err(RuleError::UnknownSetting(_))));
        let s = setting(THRESHOLD_PERCENT).unwrap();
        assert_eq!(effective(s, None, None, None), 200);
        assert_eq!(effective(s, None, Some(150), Some(180)), 150);
        assert_eq!(effective(s, Some(120), Some(150), Some(180)), 120);
        assert_eq!(effective(s, None, None, Some(180)), 180);
        assert_eq!(Scope::Plan("pl_1".into()).key(), "plan:pl_1");
    }

    proptest! {
        #[test]
        fn held_exactly_when_above_the_threshold(amount in 1i64..10_000_000, total in 0i64..100_000_000, count in 0u32..1_000, expected in 0i64..1_000_000, pct in 0u32..400) {
            let f = ChargeFacts { amount, succeeded_total: total, succeeded_count: count, expected, threshold_percent: pct };
            let held = check_charge(&f);
            match f.mean() {
                None => prop_assert!(held.is_none()),
                Some(mean) => {
                    prop_assert!(mean >= expected);
                    let t = threshold_within_floor(pct);
                    prop_assert!((MIN_MEAN_THRESHOLD_PERCENT..=DEFAULT_MEAN_THRESHOLD_PERCENT).contains(&t));
                    prop_assert_eq!(held.is_some(), amount as i128 * 100 > mean as i128 * t as i128);
                }
            }
        }
    }
}
