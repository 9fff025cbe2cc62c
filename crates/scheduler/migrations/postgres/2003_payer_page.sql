-- The payer's page (`/me/<merchant>/<payer>`), kept by the `scheduler.payers` follower: each
-- payer's contracts and what happened to their money, as the payer is shown it. The terms and
-- the next charge come from `scheduler_schedules` and `scheduler_plans`.

-- A contract's state as the payer reads it: active, suspended, terminated or expired.
CREATE TABLE scheduler_payer_contracts (
    contract_id  TEXT PRIMARY KEY,
    merchant_id  TEXT NOT NULL,
    payer_id     TEXT NOT NULL,
    plan_id      TEXT NOT NULL,
    state        TEXT NOT NULL,
    signed_at_ms BIGINT NOT NULL,
    ended_at_ms  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX scheduler_payer_contracts_payer ON scheduler_payer_contracts (merchant_id, payer_id);

-- Charges (item_id = charge id) and refunds (item_id = refund id). A charge's state:
-- scheduled, held (hold_token opens its step-up page), succeeded, failed (it may be retried),
-- rejected; a refund's: succeeded. `refunded` sums a charge's succeeded refunds; `complained`
-- is 1 once a complaint about it was filed.
CREATE TABLE scheduler_payer_items (
    item_id     TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    charge_id   TEXT NOT NULL,
    contract_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    payer_id    TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    hold_token  TEXT NOT NULL DEFAULT '',
    refunded    BIGINT NOT NULL DEFAULT 0,
    complained  BIGINT NOT NULL DEFAULT 0,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX scheduler_payer_items_payer ON scheduler_payer_items (merchant_id, payer_id, at_ms);

-- Merchants' legal names.
CREATE TABLE scheduler_payer_names (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

-- Plans' terms as `PlanCreated` carries them (the encoded `PlanTerms` message), which the page
-- words as the authorization page did.
CREATE TABLE scheduler_payer_plans (
    plan_id TEXT PRIMARY KEY,
    terms   BYTEA NOT NULL
);
