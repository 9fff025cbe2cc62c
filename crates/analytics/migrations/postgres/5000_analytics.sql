CREATE TABLE analytics_contracts (
    contract_id  TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    state        TEXT NOT NULL,
    signed_at_ms BIGINT NOT NULL,
    ended_at_ms  BIGINT NOT NULL
);
CREATE TABLE analytics_charges (
    charge_id     TEXT PRIMARY KEY,
    contract_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    state         TEXT NOT NULL,
    code          TEXT NOT NULL,
    due_at_ms     BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX analytics_charges_state ON analytics_charges (state);
CREATE TABLE analytics_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE analytics_merchant_counters (
    merchant_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, name)
);
CREATE INDEX analytics_contracts_merchant ON analytics_contracts (merchant_id, state);
CREATE INDEX analytics_charges_merchant ON analytics_charges (merchant_id, state);
CREATE TABLE analytics_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
