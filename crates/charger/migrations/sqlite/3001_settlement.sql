-- Settlement and the ledger (the same on both backends). Amounts are minor units; dates are
-- YYYY-MM-DD in Beijing time; `_at_ms` times are the platform clock.

-- Each merchant's industry (its fee rate follows it), legal name and credit code (for its
-- receipts), from `MerchantApplied`.
CREATE TABLE settlement_merchants (
    merchant_id TEXT PRIMARY KEY,
    industry    TEXT NOT NULL,
    legal_name  TEXT NOT NULL,
    credit_code TEXT NOT NULL
);

-- Fee rates the operator set, per industry; an industry not here takes its default.
CREATE TABLE settlement_fee_rates (
    industry     TEXT PRIMARY KEY,
    basis_points BIGINT NOT NULL
);

-- Each merchant's profit-sharing rules, in the order they apply.
CREATE TABLE settlement_split_rules (
    merchant_id  TEXT NOT NULL,
    position     BIGINT NOT NULL,
    receiver     TEXT NOT NULL,
    basis_points BIGINT NOT NULL,
    fixed        BIGINT NOT NULL,
    cap          BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, position)
);

-- Succeeded charges and refunds: due for settlement on `due_date`, in batch `batch_id` once
-- one took them.
CREATE TABLE settlement_items (
    item_id         TEXT PRIMARY KEY,  -- the charge's or the refund's id
    kind            TEXT NOT NULL,     -- 'charge' or 'refund'
    charge_id       TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount          BIGINT NOT NULL,   -- positive
    succeeded_at_ms BIGINT NOT NULL,
    due_date        TEXT NOT NULL,
    batch_id        TEXT
);
CREATE INDEX settlement_items_waiting ON settlement_items (due_date) WHERE batch_id IS NULL;
CREATE INDEX settlement_items_merchant ON settlement_items (merchant_id, succeeded_at_ms);

-- Merchants with a refund since their refund rate was last looked at.
CREATE TABLE settlement_review_due (
    merchant_id TEXT PRIMARY KEY
);

-- Each merchant's latest risk review: open until the operator resolves it.
CREATE TABLE settlement_reviews (
    merchant_id       TEXT PRIMARY KEY,
    reason            TEXT NOT NULL,
    state             TEXT NOT NULL,  -- 'open' or 'resolved'
    refunds           BIGINT NOT NULL,
    charges           BIGINT NOT NULL,
    rate_basis_points BIGINT NOT NULL,
    opened_at_ms      BIGINT NOT NULL,
    resolved_at_ms    BIGINT NOT NULL,
    note              TEXT NOT NULL
);

-- Closed batches, one per merchant, currency and working day at most.
CREATE TABLE settlement_batches (
    batch_id         TEXT PRIMARY KEY,
    merchant_id      TEXT NOT NULL,
    currency         TEXT NOT NULL,
    business_date    TEXT NOT NULL,
    fee_basis_points BIGINT NOT NULL,
    lines            BIGINT NOT NULL,
    gross            BIGINT NOT NULL,
    refunds          BIGINT NOT NULL,
    fees             BIGINT NOT NULL,
    splits           BIGINT NOT NULL,
    net              BIGINT NOT NULL,
    closed_at_ms     BIGINT NOT NULL
);
CREATE INDEX settlement_batches_merchant ON settlement_batches (merchant_id, business_date);

-- A batch's lines: amount = fee + splits + net (negative amount and net for a refund).
CREATE TABLE settlement_lines (
    batch_id  TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    kind      TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    amount    BIGINT NOT NULL,
    fee       BIGINT NOT NULL,
    splits    BIGINT NOT NULL,
    net       BIGINT NOT NULL,
    PRIMARY KEY (batch_id, item_id)
);

-- Each receiver's share of each charge.
CREATE TABLE settlement_splits (
    batch_id  TEXT NOT NULL,
    item_id   TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    receiver  TEXT NOT NULL,
    amount    BIGINT NOT NULL,
    PRIMARY KEY (batch_id, item_id, receiver)
);

-- The ledger: each entry's postings sum to zero (see docs/settlement.md). `entry_id` is
-- `charge:<charge_id>`, `refund:<refund_id>` or `batch:<batch_id>`.
CREATE TABLE ledger_postings (
    entry_id    TEXT NOT NULL,
    leg         BIGINT NOT NULL,
    merchant_id TEXT NOT NULL,
    currency    TEXT NOT NULL,
    account     TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (entry_id, leg)
);
CREATE INDEX ledger_postings_account ON ledger_postings (merchant_id, currency, account);

-- Receipts: one per succeeded charge and refund, numbered per merchant in log order.
CREATE TABLE receipts (
    merchant_id      TEXT NOT NULL,
    number           BIGINT NOT NULL,
    item_id          TEXT NOT NULL UNIQUE,  -- the charge's or the refund's id
    kind             TEXT NOT NULL,         -- 'charge' or 'refund'
    charge_id        TEXT NOT NULL,
    payer_id         TEXT NOT NULL,
    amount           BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    tax_basis_points BIGINT NOT NULL,       -- the VAT rate the amount includes
    tax              BIGINT NOT NULL,       -- the VAT it includes
    at_ms            BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, number)
);
CREATE INDEX receipts_charge ON receipts (charge_id);

-- Keys the charger makes once and keeps: `receipts` signs the payers' receipt links.
CREATE TABLE charger_keys (
    name TEXT PRIMARY KEY,
    key  TEXT NOT NULL
);
