//! Risk rules as data, and the audit of risk decisions: setting a rule's value for a scope
//! (`RiskRuleSet` on the log, which the scheduler and the contracts service each read into
//! their table), showing the values in force, listing decisions.
use crate::holds::HoldError;
use crate::store::{self, Db, decisions};
use autodebit_domain::risk::{self, Scope, Setting};
use autodebit_eventstore::ExpectedVersion;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::risk_rules::Values;

#[derive(Clone)]
pub struct Rules {
    platform: Platform,
}

/// A setting as shown: its value in force at a scope, and the scope it comes from.
pub struct InForce {
    pub setting: &'static Setting,
    pub value: i64,
    /// `None`: the platform's own value.
    pub source: Option<pb::RiskScope>,
}

fn not_found(what: String) -> HoldError {
    HoldError::NotFound(what)
}

impl Rules {
    pub fn new(platform: Platform) -> Self {
        Rules { platform }
    }

    /// Whether the caller may set or read values at `scope`: an operator anywhere; a merchant
    /// at its own merchant and plans only (anything else is as if it did not exist).
    /// The merchant the scope belongs to ("" for the platform).
    async fn check_scope(&self, who: &Principal, scope: &Scope) -> Result<String, HoldError> {
        let mut db = Db::Store(&self.platform.store);
        match scope {
            Scope::Platform => match who {
                Principal::Operator => Ok(String::new()),
                Principal::Merchant(_) => Err(HoldError::Invalid {
                    field: "scope",
                    problem: "the platform's values are the operator's".into(),
                }),
            },
            Scope::Merchant(m) => {
                let known = autodebit_domain::MerchantId::parse(m).is_ok_and(|id| who.may_see(&id))
                    && store::merchant_known(&mut db, m).await?;
                known.then(|| m.clone()).ok_or_else(|| not_found(format!("merchant_id: no merchant {m}")))
            }
            Scope::Plan(p) => {
                let owner = store::plan_merchant(&mut db, p).await?;
                owner
                    .filter(|m| autodebit_domain::MerchantId::parse(m).is_ok_and(|id| who.may_see(&id)))
                    .ok_or_else(|| not_found(format!("plan_id: no plan {p}")))
            }
        }
    }

    /// Records a setting's value for a scope, after checking it lies within the bounds.
    pub async fn set(&self, who: &Principal, scope: Scope, name: &str, value: i64) -> Result<InForce, HoldError> {
        let setting = risk::check_rule(name, value).map_err(|e| match e {
            risk::RuleError::UnknownSetting(_) => HoldError::Invalid { field: "setting", problem: e.to_string() },
            risk::RuleError::OutOfBounds { .. } => HoldError::Invalid { field: "value", problem: e.to_string() },
        })?;
        let merchant_id = self.check_scope(who, &scope).await?;
        let now_ms = self.platform.clock.now_ms();
        let (pb_scope, plan_id) = match &scope {
            Scope::Platform => (pb::RiskScope::Platform, String::new()),
            Scope::Merchant(_) => (pb::RiskScope::Merchant, String::new()),
            Scope::Plan(p) => (pb::RiskScope::Plan, p.clone()),
        };
        let event = pb::Event {
            kind: Some(EventKind::RiskRuleSet(pb::RiskRuleSet {
                scope: pb_scope as i32,
                merchant_id,
                plan_id,
                setting: setting.name.to_string(),
                value,
                set_by: match who {
                    Principal::Operator => "operator".into(),
                    Principal::Merchant(_) => "merchant".into(),
                },
                set_at_ms: now_ms,
            })),
        };
        let stream = format!("risk-rules-{}", scope.key());
        let cause = Cause::request(format!("{stream}/{}", setting.name));
        let mut tx = self.platform.store.begin().await?;
        tx.append(&stream, ExpectedVersion::Any, vec![codec::encode(event, &cause, now_ms)]).await?;
        tx.commit().await?;
        let (value, source) = if value == 0 { (setting.platform, None) } else { (value, Some(pb_scope)) };
        Ok(InForce { setting, value, source })
    }

    /// Every setting's value in force for a merchant's plan (or the merchant, or the platform).
    pub async fn list(
        &self,
        who: &Principal,
        merchant: Option<&str>,
        plan: Option<&str>,
    ) -> Result<Vec<InForce>, HoldError> {
        let merchant = match (who, merchant) {
            (Principal::Merchant(m), None) => Some(m.to_string()),
            (_, m) => m.map(str::to_string),
        };
        if let Some(m) = &merchant {
            self.check_scope(who, &Scope::Merchant(m.clone())).await?;
        }
        if let Some(p) = plan {
            self.check_scope(who, &Scope::Plan(p.to_string())).await?;
        }
        let merchants: Vec<&str> = merchant.iter().map(String::as_str).collect();
        let plans: Vec<&str> = plan.into_iter().collect();
        let values: Values = store::risk_rules(&mut Db::Store(&self.platform.store), &merchants, &plans).await?;
        let m = merchant.as_deref().unwrap_or("");
        let p = plan.unwrap_or("");
        Ok(risk::SETTINGS
            .iter()
            .map(|s| {
                let source = values.source(s, m, p);
                InForce { setting: s, value: values.effective(s, m, p), source }
            })
            .collect())
    }

    /// Decisions the caller may see, newest first, and the next page's token.
    pub async fn decisions(
        &self,
        who: &Principal,
        mut filter: decisions::Filter<'_>,
    ) -> Result<(Vec<decisions::Decision>, Option<String>), HoldError> {
        if let Principal::Merchant(m) = who {
            if filter.merchant_id.is_some_and(|asked| asked != m.as_str()) {
                return Ok((Vec::new(), None));
            }
            filter.merchant_id = Some(m.as_str());
        }
        let limit = filter.limit;
        let rows = decisions::list(&mut Db::Store(&self.platform.store), filter).await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| format!("{}:{}", r.at_ms, r.decision_id)))
            .flatten();
        Ok((rows, next))
    }
}
