//! Risk rule settings (`domain::risk::SETTINGS`) as a service keeps them: a table of
//! `(scope_key, setting, value)` written from `RiskRuleSet` events, and the values in force
//! for a plan of a merchant. The scheduler (charge-time rules) and the contracts service
//! (sign-time rules) each keep one, in the same shape.
use autodebit_domain::risk::{self, Scope};
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::events::v1 as pb;
use std::collections::HashMap;

/// The scope a setting event is for; `None` for one that names none.
pub fn scope_of(e: &pb::RiskRuleSet) -> Option<Scope> {
    match pb::RiskScope::try_from(e.scope).ok()? {
        pb::RiskScope::Platform => Some(Scope::Platform),
        pb::RiskScope::Merchant if !e.merchant_id.is_empty() => Some(Scope::Merchant(e.merchant_id.clone())),
        pb::RiskScope::Plan if !e.plan_id.is_empty() => Some(Scope::Plan(e.plan_id.clone())),
        _ => None,
    }
}

/// Writes a setting into `table` (a value of 0 removes the scope's own value).
pub async fn write(tx: &mut Tx, table: &str, e: &pb::RiskRuleSet) -> anyhow::Result<()> {
    let Some(scope) = scope_of(e) else { return Ok(()) };
    let key = scope.key();
    if e.value == 0 {
        tx.execute(
            &format!("DELETE FROM {table} WHERE scope_key = $1 AND setting = $2"),
            &[Value::from(key), Value::from(e.setting.as_str())],
        )
        .await?;
    } else {
        tx.execute(
            &format!(
                "INSERT INTO {table} (scope_key, setting, value) VALUES ($1, $2, $3)
                 ON CONFLICT (scope_key, setting) DO UPDATE SET value = excluded.value"
            ),
            &[Value::from(key), Value::from(e.setting.as_str()), Value::Int(e.value)],
        )
        .await?;
    }
    Ok(())
}

/// The statement reading `table`'s values of every setting at the scopes of `merchants` and
/// `plans` (and the platform's), with its parameters: rows of `(scope_key, setting, value)`.
pub fn select(table: &str, merchants: &[&str], plans: &[&str]) -> (String, Vec<Value>) {
    let mut keys: Vec<String> = vec![Scope::Platform.key()];
    keys.extend(merchants.iter().map(|m| Scope::Merchant(m.to_string()).key()));
    keys.extend(plans.iter().filter(|p| !p.is_empty()).map(|p| Scope::Plan(p.to_string()).key()));
    keys.sort_unstable();
    keys.dedup();
    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
    (
        format!("SELECT scope_key, setting, value FROM {table} WHERE scope_key IN ({})", marks.join(", ")),
        keys.into_iter().map(Value::from).collect(),
    )
}

/// Settings as read: by (scope key, setting).
#[derive(Debug, Default, Clone)]
pub struct Values(HashMap<(String, String), i64>);

#[derive(sqlx::FromRow)]
pub struct Row {
    pub scope_key: String,
    pub setting: String,
    pub value: i64,
}

impl Values {
    pub fn from_rows(rows: Vec<Row>) -> Values {
        Values(rows.into_iter().map(|r| ((r.scope_key, r.setting), r.value)).collect())
    }

    fn at(&self, scope: Scope, setting: &str) -> Option<i64> {
        self.0.get(&(scope.key(), setting.to_string())).copied()
    }

    /// The scope the value in force comes from (`None`: the platform's own value).
    pub fn source(&self, setting: &risk::Setting, merchant: &str, plan: &str) -> Option<pb::RiskScope> {
        let set = |scope: Scope| self.at(scope, setting.name).filter(|v| setting.allows(*v));
        if !plan.is_empty() && set(Scope::Plan(plan.to_string())).is_some() {
            Some(pb::RiskScope::Plan)
        } else if !merchant.is_empty() && set(Scope::Merchant(merchant.to_string())).is_some() {
            Some(pb::RiskScope::Merchant)
        } else {
            set(Scope::Platform).map(|_| pb::RiskScope::Platform)
        }
    }

    /// The value of `setting` in force for `plan` of `merchant` (`risk::effective`).
    pub fn effective(&self, setting: &'static risk::Setting, merchant: &str, plan: &str) -> i64 {
        let plan_value = (!plan.is_empty()).then(|| self.at(Scope::Plan(plan.to_string()), setting.name)).flatten();
        risk::effective(
            setting,
            plan_value,
            self.at(Scope::Merchant(merchant.to_string()), setting.name),
            self.at(Scope::Platform, setting.name),
        )
    }
}

/// The setting named, which `domain::risk::SETTINGS` always has.
pub fn setting(name: &str) -> &'static risk::Setting {
    risk::setting(name).expect("a setting of domain::risk::SETTINGS")
}
