-- Risk rule settings (domain::risk::SETTINGS) by scope (platform, merchant:<id>, plan:<id>),
-- written with each RiskRuleSet the scheduler appends: the charge-time rule reads its
-- threshold here.
CREATE TABLE scheduler_risk_rules (
    scope_key TEXT NOT NULL,
    setting   TEXT NOT NULL,
    value     BIGINT NOT NULL,
    PRIMARY KEY (scope_key, setting)
);

-- Which merchant a plan is (a plan-scoped setting is its merchant's to set); plans kept
-- before this column learn it from their contracts' schedules.
ALTER TABLE scheduler_plans ADD COLUMN merchant_id TEXT NOT NULL DEFAULT '';
UPDATE scheduler_plans SET merchant_id = COALESCE(
    (SELECT s.merchant_id FROM scheduler_schedules s WHERE s.plan_id = scheduler_plans.plan_id LIMIT 1), '');

-- Every risk decision, for the audit (RiskService/ListRiskDecisions): sign-time steps of
-- signing sessions (from the log) and charge-time holds and their outcomes (written with
-- each step). inputs: a JSON object of the rule's inputs.
CREATE TABLE scheduler_risk_decisions (
    decision_id TEXT PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    merchant_id TEXT NOT NULL,
    payer_id    TEXT NOT NULL,
    contract_id TEXT NOT NULL DEFAULT '',
    session_id  TEXT NOT NULL DEFAULT '',
    charge_id   TEXT NOT NULL DEFAULT '',
    rule        TEXT NOT NULL,
    inputs      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX scheduler_risk_decisions_merchant ON scheduler_risk_decisions (merchant_id, at_ms);
CREATE INDEX scheduler_risk_decisions_payer ON scheduler_risk_decisions (payer_id, at_ms);
CREATE INDEX scheduler_risk_decisions_contract ON scheduler_risk_decisions (contract_id, at_ms);
CREATE INDEX scheduler_risk_decisions_session ON scheduler_risk_decisions (session_id);

-- Charging frozen by a missed unauthorized-charge complaint deadline (until an operator lifts
-- it: ChargingFreezeChanged), or by a credit score below the charging floor
-- (CreditScoreChanged).
ALTER TABLE scheduler_merchants ADD COLUMN frozen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduler_merchants ADD COLUMN credit_frozen BIGINT NOT NULL DEFAULT 0;
