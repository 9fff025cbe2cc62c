CREATE TABLE contracts_merchants (
    merchant_id   TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
);
CREATE INDEX contracts_merchants_status ON contracts_merchants (status, merchant_id);
CREATE TABLE contracts_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
CREATE TABLE contracts_contracts (
    contract_id            TEXT PRIMARY KEY,
    merchant_id            TEXT NOT NULL,
    merchant_contract_code TEXT NOT NULL,
    payer_id               TEXT NOT NULL,
    plan_id                TEXT NOT NULL,
    state                  TEXT NOT NULL,
    signed_at_ms           BIGINT NOT NULL,
    expires_at_ms          BIGINT NOT NULL,
    last_success_at_ms     BIGINT NOT NULL,
    consecutive_failures   BIGINT NOT NULL,
    zombie_flagged_at_ms   BIGINT NOT NULL
);
CREATE UNIQUE INDEX contracts_contracts_code ON contracts_contracts (merchant_id, merchant_contract_code) WHERE merchant_contract_code <> '';
CREATE INDEX contracts_contracts_merchant ON contracts_contracts (merchant_id, contract_id);
CREATE TABLE contracts_plans (
    plan_id       TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    terms         BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX contracts_plans_merchant ON contracts_plans (merchant_id, plan_id);
CREATE TABLE contracts_signing_sessions (
    session_id      TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    payer_id        TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    client_region   TEXT NOT NULL,
    opened_at_ms    BIGINT NOT NULL,
    sms_code_sha256 TEXT NOT NULL,
    sms_code_hint   TEXT NOT NULL,
    ended           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX contracts_signing_device ON contracts_signing_sessions (device_id, opened_at_ms);
CREATE INDEX contracts_signing_payer ON contracts_signing_sessions (payer_id, opened_at_ms);
CREATE INDEX contracts_signing_open ON contracts_signing_sessions (ended, opened_at_ms);
CREATE TABLE contracts_idempotency_keys (
    merchant_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
CREATE INDEX contracts_contracts_expiring ON contracts_contracts (expires_at_ms) WHERE expires_at_ms > 0;
CREATE INDEX contracts_contracts_idle ON contracts_contracts ((CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END)) WHERE state = 'active' AND zombie_flagged_at_ms = 0;
CREATE INDEX contracts_contracts_flagged ON contracts_contracts (zombie_flagged_at_ms) WHERE zombie_flagged_at_ms > 0;
