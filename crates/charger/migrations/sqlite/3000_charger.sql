CREATE TABLE charger_attempts (
    out_trade_no    TEXT PRIMARY KEY,
    charge_id       TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    payer_id        TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    stream_version  BIGINT NOT NULL,
    sent            BIGINT NOT NULL,
    checks          BIGINT NOT NULL,
    due_ms          BIGINT NOT NULL,
    started_unix_ms BIGINT NOT NULL
);
CREATE INDEX charger_attempts_due ON charger_attempts (due_ms);
CREATE TABLE charger_provider_contracts (
    contract_id          TEXT PRIMARY KEY,
    merchant_id          TEXT NOT NULL,
    provider_contract_id TEXT NOT NULL,
    state                TEXT NOT NULL,
    changed_at_ms        BIGINT NOT NULL
);
CREATE TABLE charger_callback_nonces (
    nonce      TEXT PRIMARY KEY,
    seen_at_ms BIGINT NOT NULL
);
CREATE INDEX charger_callback_nonces_seen ON charger_callback_nonces (seen_at_ms);
CREATE TABLE charger_refunds (
    refund_id   TEXT PRIMARY KEY,
    charge_id   TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    due_ms      BIGINT NOT NULL,
    checks      BIGINT NOT NULL
);
CREATE INDEX charger_refunds_due ON charger_refunds (due_ms);
CREATE TABLE charger_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
