-- Risk rule settings (domain::risk::SETTINGS) by scope (platform, merchant:<id>, plan:<id>),
-- kept from RiskRuleSet: the sign-time rules read theirs when a signing session opens.
CREATE TABLE contracts_risk_rules (
    scope_key TEXT NOT NULL,
    setting   TEXT NOT NULL,
    value     BIGINT NOT NULL,
    PRIMARY KEY (scope_key, setting)
);

-- Merchants' credit scores (CreditScoreChanged): below the signing floor no new signing
-- sessions open and no contract is signed.
CREATE TABLE contracts_merchant_credit (
    merchant_id TEXT PRIMARY KEY,
    score       BIGINT NOT NULL
);
