-- Risk and complaint outcomes (projection `risk`): charges held by a charge-time rule and what
-- became of them, and complaints with their answers and penalties. Every projection starts over
-- from the beginning of the log so that what was recorded before this version is taken in too.
CREATE TABLE analytics_risk_holds (
    charge_id         TEXT PRIMARY KEY,
    merchant_id       TEXT NOT NULL,
    contract_id       TEXT NOT NULL,
    rule              TEXT NOT NULL,
    amount            BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    mean              BIGINT NOT NULL,
    threshold_percent BIGINT NOT NULL,
    held_at_ms        BIGINT NOT NULL,
    outcome           TEXT NOT NULL,
    decided_by        TEXT NOT NULL,
    decided_at_ms     BIGINT NOT NULL
);
CREATE INDEX analytics_risk_holds_merchant ON analytics_risk_holds (merchant_id, held_at_ms);

CREATE TABLE analytics_complaints (
    complaint_id   TEXT PRIMARY KEY,
    charge_id      TEXT NOT NULL,
    contract_id    TEXT NOT NULL,
    merchant_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    source         TEXT NOT NULL,
    charged        BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    filed_at_ms    BIGINT NOT NULL,
    deadline_at_ms BIGINT NOT NULL,
    answer         TEXT NOT NULL,
    answered_at_ms BIGINT NOT NULL,
    late           BIGINT NOT NULL,
    refunded       BIGINT NOT NULL,
    penalty        TEXT NOT NULL,
    missed_at_ms   BIGINT NOT NULL
);
CREATE INDEX analytics_complaints_merchant ON analytics_complaints (merchant_id, filed_at_ms);
CREATE INDEX analytics_complaints_contract ON analytics_complaints (contract_id);

DELETE FROM consumer_checkpoints WHERE consumer = 'analytics.projections';
DELETE FROM analytics_merchants;
DELETE FROM analytics_contracts;
DELETE FROM analytics_charges;
DELETE FROM analytics_signing_sessions;
DELETE FROM analytics_notices;
DELETE FROM analytics_refunds;
DELETE FROM analytics_counters;
DELETE FROM analytics_merchant_counters;
DELETE FROM analytics_settlements;
DELETE FROM analytics_merchant_reviews;
