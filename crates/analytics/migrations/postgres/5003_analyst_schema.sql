-- Analysts' own schema: `analytics`, a view per projection table under its short name
-- (`analytics.contracts` is `analytics_contracts`), and a role that may read those and nothing
-- else. A login for an analyst is made by an administrator:
--   CREATE ROLE alice LOGIN PASSWORD '…' IN ROLE autodebit_analyst;
-- (`autodebit analytics rebuild` makes the views again when it swaps tables in.)
CREATE SCHEMA IF NOT EXISTS analytics;

-- Roles belong to the whole server: another database may have made it already.
DO $$
BEGIN
    CREATE ROLE autodebit_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE OR REPLACE VIEW analytics.merchants AS SELECT * FROM analytics_merchants;
CREATE OR REPLACE VIEW analytics.contracts AS SELECT * FROM analytics_contracts;
CREATE OR REPLACE VIEW analytics.charges AS SELECT * FROM analytics_charges;
CREATE OR REPLACE VIEW analytics.refunds AS SELECT * FROM analytics_refunds;
CREATE OR REPLACE VIEW analytics.signing_sessions AS SELECT * FROM analytics_signing_sessions;
CREATE OR REPLACE VIEW analytics.notices AS SELECT * FROM analytics_notices;
CREATE OR REPLACE VIEW analytics.counters AS SELECT * FROM analytics_counters;
CREATE OR REPLACE VIEW analytics.merchant_counters AS SELECT * FROM analytics_merchant_counters;

GRANT USAGE ON SCHEMA analytics TO autodebit_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO autodebit_analyst;
