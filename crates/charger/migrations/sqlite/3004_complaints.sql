-- Complaints about charges (the Complaint aggregate's rows, written with its events).
-- state: open until answered; missed: the penalty applied when the deadline passed
-- unanswered ('' when none).
CREATE TABLE complaints (
    complaint_id          TEXT PRIMARY KEY,
    charge_id             TEXT NOT NULL UNIQUE,
    contract_id           TEXT NOT NULL,
    merchant_id           TEXT NOT NULL,
    payer_id              TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    source                TEXT NOT NULL,
    description           TEXT NOT NULL,
    provider_complaint_id TEXT NOT NULL DEFAULT '',
    filed_at_ms           BIGINT NOT NULL,
    deadline_at_ms        BIGINT NOT NULL,
    state                 TEXT NOT NULL,
    answer                TEXT NOT NULL DEFAULT '',
    late                  BIGINT NOT NULL DEFAULT 0,
    answered_at_ms        BIGINT NOT NULL DEFAULT 0,
    missed                TEXT NOT NULL DEFAULT ''
);
CREATE INDEX complaints_due ON complaints (state, missed, deadline_at_ms);
CREATE INDEX complaints_merchant ON complaints (merchant_id, filed_at_ms);

-- Evidence bytes, by their hash (events carry the hash).
CREATE TABLE complaint_evidence (
    sha256       TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    data         BLOB NOT NULL
);

-- Merchants' credit scores (CreditScoreChanged) and charging freezes
-- (ChargingFreezeChanged), as the charger last wrote them.
CREATE TABLE merchant_credit (
    merchant_id     TEXT PRIMARY KEY,
    score           BIGINT NOT NULL,
    charging_frozen BIGINT NOT NULL DEFAULT 0
);

-- A merchant whose settlement waits (a missed amount-dispute deadline): no batch of it
-- closes before not_before (YYYY-MM-DD, Beijing).
CREATE TABLE settlement_delays (
    merchant_id TEXT PRIMARY KEY,
    not_before  TEXT NOT NULL
);
