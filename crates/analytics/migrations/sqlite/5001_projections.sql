-- The projections analysts query (the same on both backends; docs/analytics.md describes every
-- column). The tables of 5000 are made again with more columns and every projection starts
-- over from the beginning of the log: its checkpoint is removed with them, so the projector
-- reads the whole log again into the new tables.
DELETE FROM consumer_checkpoints WHERE consumer = 'analytics.projections';
DROP TABLE analytics_contracts;
DROP TABLE analytics_charges;
DELETE FROM analytics_counters;
DELETE FROM analytics_merchant_counters;

-- Merchants: the industry they applied under, the zone their hours of day are counted in.
CREATE TABLE analytics_merchants (
    merchant_id TEXT PRIMARY KEY,
    industry    TEXT NOT NULL,
    time_zone   TEXT NOT NULL
);

-- Every contract signed.
CREATE TABLE analytics_contracts (
    contract_id          TEXT PRIMARY KEY,
    merchant_id          TEXT NOT NULL,
    plan_id              TEXT NOT NULL,
    payer_id             TEXT NOT NULL,
    state                TEXT NOT NULL,    -- 'active', 'suspended', 'terminated', 'expired'
    signed_at_ms         BIGINT NOT NULL,
    ended_at_ms          BIGINT NOT NULL,  -- 0 while it has not ended
    currency             TEXT NOT NULL,
    monthly_amount       BIGINT NOT NULL,  -- the fixed amount per cycle as a month's worth, minor units; 0 without one
    zombie_flagged_at_ms BIGINT NOT NULL   -- 0 unless flagged as unused
);
CREATE INDEX analytics_contracts_merchant ON analytics_contracts (merchant_id, state);
CREATE INDEX analytics_contracts_signed ON analytics_contracts (signed_at_ms);

-- Every charge scheduled or rejected.
CREATE TABLE analytics_charges (
    charge_id     TEXT PRIMARY KEY,
    contract_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    plan_id       TEXT NOT NULL,           -- '' when the contract is unknown
    reason        TEXT NOT NULL,           -- 'cycle', 'usage', 'triggered'; '' when refused before it was scheduled
    amount        BIGINT NOT NULL,         -- minor units
    currency      TEXT NOT NULL,
    state         TEXT NOT NULL,           -- 'scheduled', 'succeeded', 'failed', 'rejected'
    code          TEXT NOT NULL,           -- the provider's last failure code, or the rule that rejected it
    failures      BIGINT NOT NULL,         -- failed attempts so far
    due_at_ms     BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,         -- the last outcome
    local_hour    BIGINT NOT NULL          -- hour of day (0-23) of the last outcome in the merchant's zone; -1 before one
);
CREATE INDEX analytics_charges_state ON analytics_charges (state);
CREATE INDEX analytics_charges_merchant ON analytics_charges (merchant_id, state);
CREATE INDEX analytics_charges_due ON analytics_charges (due_at_ms);

-- Every signing session: when it reached each step of the funnel (0: never).
CREATE TABLE analytics_signing_sessions (
    session_id          TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL,
    plan_id             TEXT NOT NULL,
    payer_id            TEXT NOT NULL,
    channel             TEXT NOT NULL,     -- 'h5', 'mini_program', 'app'
    device_id           TEXT NOT NULL,
    opened_at_ms        BIGINT NOT NULL,
    page_viewed_at_ms   BIGINT NOT NULL,
    ticked_at_ms        BIGINT NOT NULL,
    held_at_ms          BIGINT NOT NULL,   -- held for review
    sms_required_at_ms  BIGINT NOT NULL,
    confirmed_at_ms     BIGINT NOT NULL,   -- the payer confirmed: the contract is signed
    contract_id         TEXT NOT NULL,
    outcome             TEXT NOT NULL      -- 'open', 'signed', 'abandoned', 'expired', 'rejected'
);
CREATE INDEX analytics_signing_sessions_opened ON analytics_signing_sessions (opened_at_ms);
CREATE INDEX analytics_signing_sessions_contract ON analytics_signing_sessions (contract_id);

-- Every notice, and how far it got.
CREATE TABLE analytics_notices (
    notice_id       TEXT PRIMARY KEY,
    merchant_id     TEXT NOT NULL,
    contract_id     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    channel         TEXT NOT NULL,         -- the channel that took it; '' while none has
    recorded_at_ms  BIGINT NOT NULL,
    sent_at_ms      BIGINT NOT NULL,
    delivered_at_ms BIGINT NOT NULL,       -- a delivery receipt
    opened_at_ms    BIGINT NOT NULL,
    converted_at_ms BIGINT NOT NULL
);
CREATE INDEX analytics_notices_recorded ON analytics_notices (recorded_at_ms);

-- Every refund asked for.
CREATE TABLE analytics_refunds (
    refund_id   TEXT PRIMARY KEY,
    charge_id   TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    state       TEXT NOT NULL,             -- 'requested', 'succeeded', 'failed'
    at_ms       BIGINT NOT NULL
);
CREATE INDEX analytics_refunds_merchant ON analytics_refunds (merchant_id, state);
