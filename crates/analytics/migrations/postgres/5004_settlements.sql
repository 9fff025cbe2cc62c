-- Settlement figures and merchants' risk reviews. Every projection starts over from the
-- beginning of the log so that batches and reviews recorded before this version are taken in
-- too: the tables are emptied and the checkpoint removed.
CREATE TABLE analytics_settlements (
    batch_id      TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    currency      TEXT NOT NULL,
    business_date TEXT NOT NULL,
    closed_at_ms  BIGINT NOT NULL,
    lines         BIGINT NOT NULL,
    gross         BIGINT NOT NULL,
    refunds       BIGINT NOT NULL,
    fees          BIGINT NOT NULL,
    splits        BIGINT NOT NULL,
    net           BIGINT NOT NULL
);
CREATE INDEX analytics_settlements_merchant ON analytics_settlements (merchant_id, closed_at_ms);

CREATE TABLE analytics_merchant_reviews (
    merchant_id       TEXT NOT NULL,
    opened_at_ms      BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    refunds           BIGINT NOT NULL,
    charges           BIGINT NOT NULL,
    rate_basis_points BIGINT NOT NULL,
    resolved_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, opened_at_ms)
);

DELETE FROM consumer_checkpoints WHERE consumer = 'analytics.projections';
DELETE FROM analytics_merchants;
DELETE FROM analytics_contracts;
DELETE FROM analytics_charges;
DELETE FROM analytics_signing_sessions;
DELETE FROM analytics_notices;
DELETE FROM analytics_refunds;
DELETE FROM analytics_counters;
DELETE FROM analytics_merchant_counters;

CREATE OR REPLACE VIEW analytics.settlements AS SELECT * FROM analytics_settlements;
CREATE OR REPLACE VIEW analytics.merchant_reviews AS SELECT * FROM analytics_merchant_reviews;
GRANT SELECT ON analytics.settlements, analytics.merchant_reviews TO autodebit_analyst;
