-- Reconciliation (the same on both backends): each provider statement matched against the
-- books, and the discrepancies found. Dates are YYYY-MM-DD in Beijing time.

-- The order number the charge succeeded under ('' for refunds and for older items).
ALTER TABLE settlement_items ADD COLUMN out_trade_no TEXT NOT NULL DEFAULT '';

-- The latest reconciliation of each merchant's statement of each day.
CREATE TABLE reconciliation_reports (
    merchant_id       TEXT NOT NULL,
    statement_date    TEXT NOT NULL,
    source            TEXT NOT NULL,   -- the provider's name, or 'upload'
    lines             BIGINT NOT NULL,
    matched           BIGINT NOT NULL,
    short_payments    BIGINT NOT NULL,
    status_mismatches BIGINT NOT NULL,
    duplicates        BIGINT NOT NULL,
    unknown_orders    BIGINT NOT NULL,
    amount_mismatches BIGINT NOT NULL,
    amount            BIGINT NOT NULL, -- the statement's totals: fen
    refunds           BIGINT NOT NULL,
    fees              BIGINT NOT NULL, -- 0.00001 yuan
    reconciled_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, statement_date)
);

-- Items recorded on one day and carried by another day's statement: matched there.
CREATE TABLE reconciliation_matched_elsewhere (
    item_id        TEXT PRIMARY KEY,
    statement_date TEXT NOT NULL
);

CREATE TABLE reconciliation_discrepancies (
    discrepancy_id   TEXT PRIMARY KEY,
    merchant_id      TEXT NOT NULL,
    statement_date   TEXT NOT NULL,
    kind             TEXT NOT NULL,    -- short_payment, status_mismatch, duplicate, unknown_order, amount_mismatch
    out_trade_no     TEXT NOT NULL,
    charge_id        TEXT NOT NULL,
    item_id          TEXT NOT NULL,
    transaction_id   TEXT NOT NULL,
    currency         TEXT NOT NULL,
    statement_amount BIGINT NOT NULL,
    platform_amount  BIGINT NOT NULL,
    line             BIGINT NOT NULL,  -- 0: the statement lacks the line
    detail           TEXT NOT NULL,
    evidence         TEXT NOT NULL,
    found_at_ms      BIGINT NOT NULL,
    deadline_ms      BIGINT NOT NULL,
    state            TEXT NOT NULL,    -- open, escalated, resolved
    resolution       TEXT NOT NULL,
    note             TEXT NOT NULL,
    refund_id        TEXT NOT NULL,
    escalated_at_ms  BIGINT NOT NULL,
    resolved_at_ms   BIGINT NOT NULL
);
CREATE INDEX reconciliation_discrepancies_due ON reconciliation_discrepancies (state, deadline_ms);
CREATE INDEX reconciliation_discrepancies_day ON reconciliation_discrepancies (merchant_id, statement_date);
CREATE INDEX reconciliation_discrepancies_item ON reconciliation_discrepancies (item_id);
