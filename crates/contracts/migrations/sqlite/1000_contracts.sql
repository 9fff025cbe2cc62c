-- The contracts service's own tables, written in the same transaction as its events: they
-- answer lookups (API keys, lists, codes, the clean-up's sweeps) that streams cannot.

-- Merchants by status, for ListMerchants; the status also gates plans, sessions and signing.
CREATE TABLE contracts_merchants (
    merchant_id   TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
);
CREATE INDEX contracts_merchants_status ON contracts_merchants (status, merchant_id);

-- API keys by id: only the secret's SHA-256 is kept.
CREATE TABLE contracts_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);

-- One row per contract: its state for lists and lookups, and what the clean-up and the
-- charge-outcome follower keep (the last success, the run of failures, the zombie flag).
-- Times are epoch milliseconds; 0 stands for "none".
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
-- A merchant's own contract code names one contract of that merchant (an empty code none).
CREATE UNIQUE INDEX contracts_contracts_code ON contracts_contracts (merchant_id, merchant_contract_code) WHERE merchant_contract_code <> '';
-- ListContracts: a merchant's contracts paged by id.
CREATE INDEX contracts_contracts_merchant ON contracts_contracts (merchant_id, contract_id);

-- The clean-up's three sweeps run every few seconds, so each seeks what is due through a
-- partial index of its own rather than reading every contract (seconds at a million).
-- Contracts with an expiry, by it.
CREATE INDEX contracts_contracts_expiring ON contracts_contracts (expires_at_ms) WHERE expires_at_ms > 0;
-- Active unflagged contracts by the moment they went idle: the later of signing and the last
-- success. The sweep's WHERE repeats this expression word for word, or the planner cannot use
-- the index.
CREATE INDEX contracts_contracts_idle ON contracts_contracts ((CASE WHEN last_success_at_ms > signed_at_ms THEN last_success_at_ms ELSE signed_at_ms END)) WHERE state = 'active' AND zombie_flagged_at_ms = 0;
-- Flagged contracts, by when they were flagged.
CREATE INDEX contracts_contracts_flagged ON contracts_contracts (zombie_flagged_at_ms) WHERE zombie_flagged_at_ms > 0;

-- Plans keep their terms as encoded bytes (PlanTerms), defaults made explicit.
CREATE TABLE contracts_plans (
    plan_id       TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    terms         BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- ListPlans: a merchant's plans paged by id.
CREATE INDEX contracts_plans_merchant ON contracts_plans (merchant_id, plan_id);

-- Signing sessions: what the sign-time risk checks ask, the SMS code's hash (and, with the
-- simulator provider, the code to show), and whether the session has ended.
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
-- The payer accounts a device signed for within the velocity window.
CREATE INDEX contracts_signing_device ON contracts_signing_sessions (device_id, opened_at_ms);
-- A payer's first session (their usual region).
CREATE INDEX contracts_signing_payer ON contracts_signing_sessions (payer_id, opened_at_ms);
-- Sessions still open, oldest first, for the expiry sweep.
CREATE INDEX contracts_signing_open ON contracts_signing_sessions (ended, opened_at_ms);

-- The contract each idempotency key signed: contract ids are generated (time-ordered), so a
-- repeated request finds its contract here rather than by deriving the id from the key.
CREATE TABLE contracts_idempotency_keys (
    merchant_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
