CREATE TABLE notifier_notices (
    notice_id      TEXT PRIMARY KEY,
    kind           BIGINT NOT NULL,
    channel        TEXT NOT NULL,
    recipient      TEXT NOT NULL,
    contract_id    TEXT NOT NULL,
    charge_id      TEXT NOT NULL,
    text           TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX notifier_notices_contract ON notifier_notices (contract_id, recorded_at_ms);
CREATE TABLE notifier_contracts (
    contract_id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL
);
CREATE TABLE notifier_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
