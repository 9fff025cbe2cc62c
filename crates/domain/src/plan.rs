//! Deduction plans: the template a merchant's contracts are signed against.
use crate::{Aggregate, Currency, Cycle, MAX_CHARGE_CNY_FEN, MerchantId, Money, Timestamp};

/// How a plan's charges arise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeMode {
    FixedCycle,
    Usage,
    EventTriggered,
    /// A prepaid fixed cycle plus usage settled each period.
    Hybrid,
}

/// Whether each charge is the plan's amount, or anything up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountType {
    Fixed,
    UpToCap,
}

/// The platform's floor between retries of a failed charge (defined with the retry rules).
pub use crate::retry::MIN_RETRY_GAP_HOURS;
/// At most this many charges per contract per calendar day, whatever a plan says.
pub const MAX_DAILY_COUNT: u32 = 10;
pub use crate::validity::VALIDITY_GRACE_DAYS;
/// How long before a charge the payer is told of it when a plan does not say.
pub const DEFAULT_NOTICE_LEAD_HOURS: u32 = 24;

/// How many charges a day a plan allows when it does not say.
pub const DEFAULT_DAILY_COUNT_LIMIT: u32 = MAX_DAILY_COUNT;

/// A plan's daily charge count: the number it asks for (0: not said), else the default.
pub fn daily_count_limit(asked: u32) -> u32 {
    if asked == 0 { DEFAULT_DAILY_COUNT_LIMIT } else { asked }
}

/// A plan's pre-debit lead time: the hours it asks for (0: not said), else the default.
pub fn notice_lead_hours(asked: u32) -> u32 {
    if asked == 0 { DEFAULT_NOTICE_LEAD_HOURS } else { asked }
}

/// The pre-debit lead time of a plan that keeps `hours` (as `notice_lead_hours` gives them);
/// `None`, for a contract whose plan is not known, the default.
pub fn notice_lead(hours: Option<i64>) -> chrono::TimeDelta {
    chrono::TimeDelta::hours(hours.unwrap_or(i64::from(DEFAULT_NOTICE_LEAD_HOURS)))
}

/// When a contract change (amount, cycle) takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModificationRule {
    Immediately,
    NextCycle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub plan_id: String,
    pub merchant_id: MerchantId,
    pub service_name: String,
    pub charge_mode: ChargeMode,
    /// Required for fixed-cycle and hybrid plans.
    pub cycle: Option<Cycle>,
    pub amount_type: AmountType,
    /// The amount of each cycle charge (fixed) or the most one charge may be (up to cap).
    pub amount: Money,
    pub per_charge_cap: Money,
    pub daily_count_limit: u32,
    /// `None`: three times the contract's monthly average, once it has history.
    pub daily_amount_limit: Option<Money>,
    pub service_period_days: u32,
    pub validity_days: u32,
    pub notice_lead_hours: u32,
    pub retry_gaps_hours: Vec<u32>,
    pub provider: String,
    pub first_charge_at_signing: bool,
    pub modification_rule: ModificationRule,
    /// How usage is priced: required for usage and hybrid plans, refused for the others.
    pub usage: Option<crate::usage::UsagePricing>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PlanError {
    pub field: &'static str,
    pub problem: String,
}

fn err(field: &'static str, problem: impl Into<String>) -> PlanError {
    PlanError { field, problem: problem.into() }
}

/// The simulated provider: nothing leaves the platform, and the hosted page shows the codes a
/// payer would otherwise receive.
pub const SIMULATOR: &str = "simulator";
/// WeChat Pay's recurring deduction (Papay).
pub const WECHATPAY: &str = "wechatpay";
/// The providers a plan can name.
pub const PROVIDERS: &[&str] = &[SIMULATOR, WECHATPAY];
/// The provider of a plan that names none.
pub const DEFAULT_PROVIDER: &str = SIMULATOR;

/// A plan's provider: the one it names ("": not said), else the default.
pub fn provider(asked: &str) -> &str {
    if asked.is_empty() { DEFAULT_PROVIDER } else { asked }
}

/// The stream a plan's events are kept in.
pub fn stream(plan_id: &str) -> String {
    format!("plan-{plan_id}")
}

impl Plan {
    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), PlanError> {
        let name = self.service_name.chars().count();
        if name == 0 || name > 64 {
            return Err(err("service_name", "must be 1 to 64 characters"));
        }
        match (self.charge_mode, self.cycle) {
            (ChargeMode::FixedCycle | ChargeMode::Hybrid, None) => {
                return Err(err("cycle", "is required for fixed-cycle and hybrid plans"));
            }
            _ => {}
        }
        match (self.charge_mode, &self.usage) {
            (ChargeMode::Usage | ChargeMode::Hybrid, None) => {
                return Err(err("usage", "is required for usage and hybrid plans"));
            }
            (ChargeMode::FixedCycle | ChargeMode::EventTriggered, Some(_)) => {
                return Err(err("usage", "is only for usage and hybrid plans"));
            }
            (_, Some(u)) => u.validate().map_err(|e| err(e.field, e.problem))?,
            _ => {}
        }
        let currency = self.per_charge_cap.currency();
        if self.amount.currency() != currency {
            return Err(err("amount.currency", format!("must match per_charge_cap's currency {currency}")));
        }
        if self.per_charge_cap.minor_units() <= 0 {
            return Err(err("per_charge_cap.minor_units", "must be positive"));
        }
        if self.per_charge_cap.minor_units() > MAX_CHARGE_CNY_FEN {
            return Err(err(
                "per_charge_cap.minor_units",
                format!(
                    "{} is above the platform maximum of {MAX_CHARGE_CNY_FEN} (50,000 CNY)",
                    self.per_charge_cap.minor_units()
                ),
            ));
        }
        if self.amount.minor_units() <= 0 {
            return Err(err("amount.minor_units", "must be positive"));
        }
        if self.amount.minor_units() > self.per_charge_cap.minor_units() {
            return Err(err("amount.minor_units", "must not exceed per_charge_cap"));
        }
        if self.daily_count_limit == 0 || self.daily_count_limit > MAX_DAILY_COUNT {
            return Err(err("daily_count_limit", format!("must be 1 to {MAX_DAILY_COUNT}")));
        }
        if let Some(d) = self.daily_amount_limit {
            if d.currency() != currency {
                return Err(err("daily_amount_limit.currency", format!("must be {currency}")));
            }
            if d.minor_units() < self.per_charge_cap.minor_units() {
                return Err(err("daily_amount_limit.minor_units", "must be at least per_charge_cap"));
            }
        }
        if self.service_period_days == 0 || self.service_period_days > 3660 {
            return Err(err("service_period_days", "must be 1 to 3660"));
        }
        if self.validity_days == 0 {
            return Err(err("validity_days", "must be positive"));
        }
        if self.validity_days > self.service_period_days + VALIDITY_GRACE_DAYS {
            return Err(err(
                "validity_days",
                format!(
                    "{} is longer than the service period plus {VALIDITY_GRACE_DAYS} days ({})",
                    self.validity_days,
                    self.service_period_days + VALIDITY_GRACE_DAYS
                ),
            ));
        }
        if self.notice_lead_hours > 24 * 14 {
            return Err(err("notice_lead_hours", "must be at most 336 (two weeks)"));
        }
        if self.retry_gaps_hours.len() > 10 {
            return Err(err("retry_schedule_hours", "at most 10 retries"));
        }
        if let Some(g) = self.retry_gaps_hours.iter().find(|g| **g < MIN_RETRY_GAP_HOURS) {
            return Err(err(
                "retry_schedule_hours",
                format!("{g} h is shorter than the {MIN_RETRY_GAP_HOURS}-hour minimum between retries"),
            ));
        }
        if !PROVIDERS.contains(&self.provider.as_str()) {
            return Err(err("provider", format!("must be one of {}", PROVIDERS.join(", "))));
        }
        Ok(())
    }

    pub fn currency(&self) -> Currency {
        self.per_charge_cap.currency()
    }

    /// Papay deducts CNY only: a WeChat Pay plan's amounts are all in CNY (every amount of a
    /// plan is in the per-charge cap's currency).
    pub fn check_provider_currency(&self) -> Result<(), PlanError> {
        if self.provider == WECHATPAY && self.currency() != Currency::CNY {
            return Err(err(
                "per_charge_cap.currency",
                format!("{} is not CNY, the only currency WeChat Pay deducts in", self.currency()),
            ));
        }
        Ok(())
    }

    /// Whether a contract on this plan may charge `amount` each cycle: not above the
    /// per-charge cap, and in its currency.
    pub fn allows_amount(&self, amount: Money) -> bool {
        amount.currency() == self.currency() && amount.minor_units() <= self.per_charge_cap.minor_units()
    }
}

/// A plan is created once and never changes: a new offer is a new plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanCommand {
    Create(Plan),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEvent {
    Created { plan: Plan, at: Timestamp },
}

/// Why a plan cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefused {
    #[error(transparent)]
    Invalid(#[from] PlanError),
    #[error("plan {0} already exists")]
    AlreadyCreated(String),
}

/// The plan as created; `None` before.
pub type PlanState = Option<Plan>;

impl Aggregate for Plan {
    type State = PlanState;
    type Command = PlanCommand;
    type Event = PlanEvent;
    type Error = PlanRefused;

    /// Checks every field first, so a repeated request with an invalid plan is refused for
    /// the plan, not for the repetition.
    fn decide(state: &PlanState, command: PlanCommand, now: Timestamp) -> Result<Vec<PlanEvent>, PlanRefused> {
        let PlanCommand::Create(plan) = command;
        plan.validate()?;
        plan.check_provider_currency()?;
        if let Some(existing) = state {
            return Err(PlanRefused::AlreadyCreated(existing.plan_id.clone()));
        }
        Ok(vec![PlanEvent::Created { plan, at: now }])
    }

    fn apply(state: PlanState, event: &PlanEvent) -> PlanState {
        match event {
            PlanEvent::Created { plan, .. } => Some(state.unwrap_or_else(|| plan.clone())),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_plan_that_names_no_lead_time_notifies_a_day_ahead() {
        assert_eq!(notice_lead_hours(0), DEFAULT_NOTICE_LEAD_HOURS);
        assert_eq!(DEFAULT_NOTICE_LEAD_HOURS, 24);
        assert_eq!(notice_lead_hours(48), 48);
        assert_eq!(notice_lead(None), chrono::TimeDelta::hours(24));
        assert_eq!(notice_lead(Some(2)), chrono::TimeDelta::hours(2));
    }

    use super::*;
    use proptest::prelude::*;

    pub fn sample() -> Plan {
        Plan {
            plan_id: "pl_1".into(),
            merchant_id: MerchantId::parse("mch_1").unwrap(),
            service_name: "视频会员".into(),
            charge_mode: ChargeMode::FixedCycle,
            cycle: Some(Cycle::Monthly),
            amount_type: AmountType::Fixed,
            amount: Money::cny(1_990),
            per_charge_cap: Money::cny(1_990),
            daily_count_limit: 10,
            daily_amount_limit: None,
            service_period_days: 365,
            validity_days: 395,
            notice_lead_hours: 24,
            retry_gaps_hours: vec![6, 24],
            provider: "simulator".into(),
            first_charge_at_signing: false,
            modification_rule: ModificationRule::NextCycle,
            usage: None,
        }
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(sample().validate(), Ok(()));
        let cases: Vec<(Box<dyn Fn(&mut Plan)>, &str)> = vec![
            (Box::new(|p| p.per_charge_cap = Money::cny(5_000_001)), "per_charge_cap.minor_units"),
            (Box::new(|p| p.amount = Money::cny(2_000)), "amount.minor_units"),
            (Box::new(|p| p.validity_days = 396), "validity_days"),
            (Box::new(|p| p.daily_count_limit = 11), "daily_count_limit"),
            (Box::new(|p| p.retry_gaps_hours = vec![6, 5]), "retry_schedule_hours"),
            (Box::new(|p| p.cycle = None), "cycle"),
            (Box::new(|p| p.provider = "paypal".into()), "provider"),
            (Box::new(|p| p.service_name = String::new()), "service_name"),
            (Box::new(|p| p.charge_mode = ChargeMode::Usage), "usage"),
        ];
        for (change, field) in cases {
            let mut p = sample();
            change(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn defaults_fill_what_a_plan_leaves_out() {
        assert_eq!(daily_count_limit(0), DEFAULT_DAILY_COUNT_LIMIT);
        assert_eq!(daily_count_limit(3), 3);
        assert_eq!(provider(""), DEFAULT_PROVIDER);
        assert_eq!(provider(WECHATPAY), WECHATPAY);
    }

    #[test]
    fn wechatpay_plans_charge_cny_only() {
        let mut p = sample();
        p.provider = WECHATPAY.into();
        assert_eq!(p.check_provider_currency(), Ok(()));
        p.per_charge_cap = Money::new(1_990, Currency::parse("USD").unwrap());
        p.amount = Money::new(1_990, Currency::parse("USD").unwrap());
        assert_eq!(p.check_provider_currency().unwrap_err().field, "per_charge_cap.currency");
        p.provider = SIMULATOR.into();
        assert_eq!(p.check_provider_currency(), Ok(()));
    }

    #[test]
    fn a_contract_charges_at_most_the_cap_in_the_plan_currency() {
        let p = sample();
        assert!(p.allows_amount(Money::cny(1_990)));
        assert!(p.allows_amount(Money::cny(1)));
        assert!(!p.allows_amount(Money::cny(1_991)));
        assert!(!p.allows_amount(Money::new(100, Currency::parse("USD").unwrap())));
    }

    #[test]
    fn a_plan_is_created_once() {
        let now = crate::clock::from_millis(1_700_000_000_000);
        let events = Plan::decide(&None, PlanCommand::Create(sample()), now).unwrap();
        let state = Plan::fold(&events);
        assert_eq!(state.as_ref(), Some(&sample()));
        assert_eq!(
            Plan::decide(&state, PlanCommand::Create(sample()), now),
            Err(PlanRefused::AlreadyCreated("pl_1".into()))
        );
        let mut bad = sample();
        bad.service_name = String::new();
        assert!(matches!(Plan::decide(&state, PlanCommand::Create(bad), now), Err(PlanRefused::Invalid(_))));
    }

    proptest! {
        /// No accepted plan retries sooner than six hours, caps a charge above 50,000 CNY or
        /// outlives its service period by more than 30 days.
        #[test]
        fn accepted_plans_keep_the_hard_limits(
            gaps in proptest::collection::vec(0u32..48, 0..5),
            cap in 1i64..6_000_000,
            period in 1u32..400,
            validity in 1u32..500,
        ) {
            let mut p = sample();
            p.retry_gaps_hours = gaps;
            p.per_charge_cap = Money::cny(cap);
            p.amount = Money::cny(cap.min(1_000));
            p.service_period_days = period;
            p.validity_days = validity;
            if p.validate().is_ok() {
                prop_assert!(p.retry_gaps_hours.iter().all(|g| *g >= MIN_RETRY_GAP_HOURS));
                prop_assert!(p.per_charge_cap.minor_units() <= MAX_CHARGE_CNY_FEN);
                prop_assert!(p.validity_days <= p.service_period_days + VALIDITY_GRACE_DAYS);
            }
        }
    }
}
