-- Charge-time risk (domain::risk). The mean a charge is held against: how many of the
-- contract's charges succeeded, and their sum, counted from this migration on (a contract
-- with earlier successes counts from here; until then its terms' amount is the mean).
ALTER TABLE scheduler_schedules ADD COLUMN succeeded_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scheduler_schedules ADD COLUMN counted_total BIGINT NOT NULL DEFAULT 0;

-- Charges held by a risk rule (their ChargeHeld), until released or rejected. state: held
-- (waiting for the payer or an operator, until expires_at_ms), released (approved, waiting
-- for the charge window: charge_at_ms), scheduled, rejected.
CREATE TABLE scheduler_risk_holds (
    charge_id     TEXT PRIMARY KEY,
    contract_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    payer_id      TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    rule          TEXT NOT NULL,
    detail        TEXT NOT NULL,
    mean          BIGINT NOT NULL,
    threshold_percent BIGINT NOT NULL,
    history_count BIGINT NOT NULL,
    -- Opens the payer's step-up page.
    token         TEXT NOT NULL UNIQUE,
    held_at_ms    BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    state         TEXT NOT NULL,
    -- payer or operator; the operator's note.
    released_by   TEXT NOT NULL DEFAULT '',
    note          TEXT NOT NULL DEFAULT '',
    charge_at_ms  BIGINT NOT NULL DEFAULT 0,
    decided_at_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX scheduler_risk_holds_state ON scheduler_risk_holds (state, expires_at_ms);
CREATE INDEX scheduler_risk_holds_merchant ON scheduler_risk_holds (merchant_id, held_at_ms);
