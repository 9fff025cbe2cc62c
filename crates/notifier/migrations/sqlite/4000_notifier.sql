-- The notifier's tables (the same on both backends).

-- Every notice recorded (one per causing event: its id derives from the event's), by contract.
CREATE TABLE notifier_notices (
    notice_id      TEXT PRIMARY KEY,
    kind           BIGINT NOT NULL,    -- NoticeKind
    channel        TEXT NOT NULL,      -- 'log' in this release
    recipient      TEXT NOT NULL,      -- the payer
    contract_id    TEXT NOT NULL,
    charge_id      TEXT NOT NULL,      -- empty for a notice about no charge
    text           TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL     -- platform clock
);
CREATE INDEX notifier_notices_contract ON notifier_notices (contract_id, recorded_at_ms);

-- Each signed contract's merchant: who may read its notices.
CREATE TABLE notifier_contracts (
    contract_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL
);

-- API keys, kept from the log's key events by runtime::auth.
CREATE TABLE notifier_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL      -- 1: revoked
);
