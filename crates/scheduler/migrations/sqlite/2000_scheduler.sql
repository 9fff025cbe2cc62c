-- The scheduler's tables. Times are milliseconds since the epoch, money integer minor units.

-- One billing schedule per contract (the stored form of the domain's `Schedule`), which is
-- also its due timer: the due loop claims rows whose `wake_ms` has passed.
CREATE TABLE scheduler_schedules (
    contract_id         TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL,
    payer_id            TEXT NOT NULL,
    plan_id             TEXT NOT NULL DEFAULT '',
    -- fixed, usage, event or hybrid: which sides of the schedule run.
    mode                TEXT NOT NULL DEFAULT 'fixed',
    -- The merchant's zone, which the calendars and the charging day count in.
    time_zone           TEXT NOT NULL DEFAULT 'Asia/Shanghai',
    -- Each cycle charge's amount and the contract's currency.
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    -- The signing, and the end of the contract's validity (0: none).
    anchor_ms           BIGINT NOT NULL,
    expires_at_ms       BIGINT NOT NULL DEFAULT 0,
    -- How long before a charge its pre-debit notice goes out (the plan's, or the domain's
    -- default; every schedule is written with it).
    notice_lead_ms      BIGINT NOT NULL,
    -- The fixed side's calendar: period n falls due n - cycle_anchor_period cycles after
    -- cycle_anchor_ms (the signing, until a cycle change re-anchors it).
    cycle               TEXT NOT NULL,
    cycle_anchor_ms     BIGINT NOT NULL DEFAULT 0,
    cycle_anchor_period BIGINT NOT NULL DEFAULT 0,
    -- The fixed side's next period and when it falls due; the period noticed last, and when
    -- its charge may go.
    next_period         BIGINT NOT NULL,
    next_due_ms         BIGINT NOT NULL,
    noticed_period      BIGINT NOT NULL DEFAULT 0,
    ready_ms            BIGINT NOT NULL DEFAULT 0,
    -- The usage side ('' cycle: none): the usage cycle and grace window, the open period and
    -- when it ends, the period noticed last, and when its charge may go.
    usage_cycle         TEXT NOT NULL DEFAULT '',
    usage_grace_ms      BIGINT NOT NULL DEFAULT 0,
    usage_period        BIGINT NOT NULL DEFAULT 0,
    usage_end_ms        BIGINT NOT NULL DEFAULT 0,
    usage_noticed       BIGINT NOT NULL DEFAULT 0,
    usage_ready_ms      BIGINT NOT NULL DEFAULT 0,
    -- A change of terms waiting for its period: the last period on the old terms (-1: none),
    -- then the new amount and cycle.
    change_through      BIGINT NOT NULL DEFAULT -1,
    change_amount       BIGINT NOT NULL DEFAULT 0,
    change_cycle        TEXT NOT NULL DEFAULT '',
    -- What the contract was charged on its latest charging day (YYYY-MM-DD, merchant's zone).
    day_key             TEXT NOT NULL DEFAULT '',
    day_count           BIGINT NOT NULL DEFAULT 0,
    day_amount          BIGINT NOT NULL DEFAULT 0,
    -- The contract's successful charges: their sum, and when the first was (0: none yet).
    total_succeeded     BIGINT NOT NULL DEFAULT 0,
    first_success_ms    BIGINT NOT NULL DEFAULT 0,
    -- Whether it bills; the earliest moment anything is due (a bigint's maximum: no timer);
    -- a revision raised by every change to the row.
    active              BIGINT NOT NULL,
    wake_ms             BIGINT NOT NULL DEFAULT 0,
    rev                 BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX scheduler_schedules_wake ON scheduler_schedules (active, wake_ms);

-- The plans contracts are signed against, as the scheduler needs them (kept from
-- PlanCreated; 0 limits: not set).
CREATE TABLE scheduler_plans (
    plan_id                 TEXT PRIMARY KEY,
    per_charge_cap          BIGINT NOT NULL,
    daily_count_limit       BIGINT NOT NULL,
    daily_amount_limit      BIGINT NOT NULL,
    first_charge_at_signing BIGINT NOT NULL,
    -- Hours between retries of a failed charge, comma-separated.
    retry_gaps              TEXT NOT NULL DEFAULT '',
    mode                    TEXT NOT NULL DEFAULT 'fixed',
    notice_lead_hours       BIGINT NOT NULL,
    usage_unit              TEXT NOT NULL DEFAULT '',
    -- up_to:unit_price pairs, comma-separated; up_to 0 is unbounded.
    usage_tiers             TEXT NOT NULL DEFAULT '',
    usage_grace_minutes     BIGINT NOT NULL DEFAULT 60,
    usage_cycle             TEXT NOT NULL DEFAULT '',
    -- immediately or next_cycle.
    modification_rule       TEXT NOT NULL DEFAULT 'next_cycle'
);

-- Merchants' zones and suspensions.
CREATE TABLE scheduler_merchants (
    merchant_id TEXT PRIMARY KEY,
    time_zone   TEXT NOT NULL,
    suspended   BIGINT NOT NULL DEFAULT 0
);

-- Usage recorded by RecordUsage, per usage period.
CREATE TABLE scheduler_usage (
    usage_id       TEXT PRIMARY KEY,
    contract_id    TEXT NOT NULL,
    period         BIGINT NOT NULL,
    quantity       BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL
);
CREATE INDEX scheduler_usage_period ON scheduler_usage (contract_id, period);

-- Failed charges' next attempts: waiting until due_ms, then issued.
CREATE TABLE scheduler_retries (
    charge_id      TEXT PRIMARY KEY,
    contract_id    TEXT NOT NULL,
    -- The charge stream's version at the failure; the retry is appended there.
    stream_version BIGINT NOT NULL,
    due_ms         BIGINT NOT NULL,
    state          TEXT NOT NULL
);
CREATE INDEX scheduler_retries_due ON scheduler_retries (state, due_ms);

-- Triggered charges admitted outside the charge window, held until it opens (due_ms).
CREATE TABLE scheduler_held (
    charge_id   TEXT PRIMARY KEY,
    contract_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    payer_id    TEXT NOT NULL,
    amount      BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    due_ms      BIGINT NOT NULL
);
CREATE INDEX scheduler_held_due ON scheduler_held (due_ms);

-- The API keys the scheduler checks callers against (kept from the key events).
CREATE TABLE scheduler_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
