-- Profit sharing through the provider (the same on both backends).

-- Orders to send: one per settled charge with splits, from its batch's close until its outcome
-- is recorded (`ProfitSharingEnded`).
CREATE TABLE charger_shares (
    out_order_no TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    charge_id    TEXT NOT NULL,
    batch_id     TEXT NOT NULL,
    receivers    TEXT NOT NULL,   -- JSON: [[receiver, amount], …]
    due_ms       BIGINT NOT NULL, -- when the worker next sends it (or its lease runs out)
    checks       BIGINT NOT NULL  -- answers that left it undecided so far
);
CREATE INDEX charger_shares_due ON charger_shares (due_ms);

-- Every profit-sharing order and how it stands.
CREATE TABLE settlement_share_orders (
    out_order_no TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    charge_id    TEXT NOT NULL,
    batch_id     TEXT NOT NULL,
    amount       BIGINT NOT NULL,  -- the receivers' shares together
    state        TEXT NOT NULL,    -- pending, finished, failed, books_only
    order_id     TEXT NOT NULL,    -- the provider's
    code         TEXT NOT NULL,
    message      TEXT NOT NULL,
    ended_at_ms  BIGINT NOT NULL
);
CREATE INDEX settlement_share_orders_batch ON settlement_share_orders (batch_id);
CREATE INDEX settlement_share_orders_charge ON settlement_share_orders (charge_id);
