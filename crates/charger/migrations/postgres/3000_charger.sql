-- The charger's tables (the same on both backends). Times ending in `_unix_ms`, `due_ms` and
-- `seen_at_ms` are machine time; `changed_at_ms` is the platform clock.

-- Attempts started and not yet ended: what the provider is sent (or asked about) for each.
-- A row goes when its outcome is recorded on the charge stream.
CREATE TABLE charger_attempts (
    out_trade_no    TEXT PRIMARY KEY,  -- the attempt's order number at the provider
    charge_id       TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    payer_id        TEXT NOT NULL,
    amount          BIGINT NOT NULL,   -- minor units
    currency        TEXT NOT NULL,
    attempt         BIGINT NOT NULL,   -- the first is 1
    provider        TEXT NOT NULL,
    stream_version  BIGINT NOT NULL,   -- the charge stream's version once the attempt started
    sent            BIGINT NOT NULL,   -- 1: it may have reached the provider (ask, never resend)
    checks          BIGINT NOT NULL,   -- questions asked about it so far
    due_ms          BIGINT NOT NULL,   -- when the worker next takes it up (or its lease runs out)
    started_unix_ms BIGINT NOT NULL
);
CREATE INDEX charger_attempts_due ON charger_attempts (due_ms);

-- Contracts known to a provider by an id of its own (WeChat Pay's contract_id), from
-- `ProviderContractChanged`; state is 'signed' or 'deleted'.
CREATE TABLE charger_provider_contracts (
    contract_id          TEXT PRIMARY KEY,
    merchant_id          TEXT NOT NULL,
    provider_contract_id TEXT NOT NULL,
    state                TEXT NOT NULL,
    changed_at_ms        BIGINT NOT NULL
);

-- Nonces of WeChat Pay v3 callbacks seen lately: one seen again is a replay.
CREATE TABLE charger_callback_nonces (
    nonce      TEXT PRIMARY KEY,
    seen_at_ms BIGINT NOT NULL
);
CREATE INDEX charger_callback_nonces_seen ON charger_callback_nonces (seen_at_ms);

-- Refunds asked for and not yet ended; a row goes when the refund's outcome is recorded.
CREATE TABLE charger_refunds (
    refund_id   TEXT PRIMARY KEY,      -- also the provider's out_refund_no
    charge_id   TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    due_ms      BIGINT NOT NULL,       -- when the worker next sends it (or its lease runs out)
    checks      BIGINT NOT NULL        -- answers that left it undecided so far
);
CREATE INDEX charger_refunds_due ON charger_refunds (due_ms);

-- API keys, kept from the log's key events by runtime::auth.
CREATE TABLE charger_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL      -- 1: revoked
);
