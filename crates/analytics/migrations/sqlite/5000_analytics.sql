-- The analytics read models (the same on both backends), projected from the whole log.

-- Every contract signed, and its state: 'active', 'suspended', 'terminated' or 'expired'.
CREATE TABLE analytics_contracts (
    contract_id  TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    state        TEXT NOT NULL,
    signed_at_ms BIGINT NOT NULL,
    ended_at_ms  BIGINT NOT NULL       -- 0 while it has not ended
);
CREATE INDEX analytics_contracts_merchant ON analytics_contracts (merchant_id, state);

-- Every charge scheduled or rejected, and its state: 'scheduled', 'succeeded', 'failed' or
-- 'rejected'.
CREATE TABLE analytics_charges (
    charge_id     TEXT PRIMARY KEY,
    contract_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    amount        BIGINT NOT NULL,     -- minor units
    currency      TEXT NOT NULL,
    state         TEXT NOT NULL,
    code          TEXT NOT NULL,       -- the provider's code, or the rule that rejected it
    due_at_ms     BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX analytics_charges_state ON analytics_charges (state);
CREATE INDEX analytics_charges_merchant ON analytics_charges (merchant_id, state);

-- Platform-wide counters ('events_projected', 'notices_recorded').
CREATE TABLE analytics_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Each merchant's own counters ('notices_recorded').
CREATE TABLE analytics_merchant_counters (
    merchant_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, name)
);

-- API keys, kept from the log's key events by runtime::auth.
CREATE TABLE analytics_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL      -- 1: revoked
);
