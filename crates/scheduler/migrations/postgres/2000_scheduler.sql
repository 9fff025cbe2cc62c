CREATE TABLE scheduler_schedules (
    contract_id         TEXT PRIMARY KEY,
    merchant_id         TEXT NOT NULL,
    payer_id            TEXT NOT NULL,
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    cycle               TEXT NOT NULL,
    anchor_ms           BIGINT NOT NULL,
    next_period         BIGINT NOT NULL,
    next_due_ms         BIGINT NOT NULL,
    active              BIGINT NOT NULL,
    plan_id             TEXT NOT NULL DEFAULT '',
    expires_at_ms       BIGINT NOT NULL DEFAULT 0,
    total_succeeded     BIGINT NOT NULL DEFAULT 0,
    first_success_ms    BIGINT NOT NULL DEFAULT 0,
    mode                TEXT NOT NULL DEFAULT 'fixed',
    time_zone           TEXT NOT NULL DEFAULT 'Asia/Shanghai',
    notice_lead_ms      BIGINT NOT NULL DEFAULT 86400000,
    noticed_period      BIGINT NOT NULL DEFAULT 0,
    ready_ms            BIGINT NOT NULL DEFAULT 0,
    usage_cycle         TEXT NOT NULL DEFAULT '',
    usage_grace_ms      BIGINT NOT NULL DEFAULT 0,
    usage_period        BIGINT NOT NULL DEFAULT 0,
    usage_end_ms        BIGINT NOT NULL DEFAULT 0,
    usage_noticed       BIGINT NOT NULL DEFAULT 0,
    usage_ready_ms      BIGINT NOT NULL DEFAULT 0,
    wake_ms             BIGINT NOT NULL DEFAULT 0,
    day_key             TEXT NOT NULL DEFAULT '',
    day_count           BIGINT NOT NULL DEFAULT 0,
    day_amount          BIGINT NOT NULL DEFAULT 0,
    rev                 BIGINT NOT NULL DEFAULT 0,
    cycle_anchor_ms     BIGINT NOT NULL DEFAULT 0,
    cycle_anchor_period BIGINT NOT NULL DEFAULT 0,
    change_through      BIGINT NOT NULL DEFAULT -1,
    change_amount       BIGINT NOT NULL DEFAULT 0,
    change_cycle        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE scheduler_plans (
    plan_id                 TEXT PRIMARY KEY,
    per_charge_cap          BIGINT NOT NULL,
    daily_count_limit       BIGINT NOT NULL,
    daily_amount_limit      BIGINT NOT NULL,
    first_charge_at_signing BIGINT NOT NULL,
    retry_gaps              TEXT NOT NULL DEFAULT '',
    mode                    TEXT NOT NULL DEFAULT 'fixed',
    notice_lead_hours       BIGINT NOT NULL DEFAULT 24,
    usage_unit              TEXT NOT NULL DEFAULT '',
    usage_tiers             TEXT NOT NULL DEFAULT '',
    usage_grace_minutes     BIGINT NOT NULL DEFAULT 60,
    usage_cycle             TEXT NOT NULL DEFAULT '',
    modification_rule       TEXT NOT NULL DEFAULT 'next_cycle'
);
CREATE TABLE scheduler_retries (
    charge_id      TEXT PRIMARY KEY,
    contract_id    TEXT NOT NULL,
    stream_version BIGINT NOT NULL,
    due_ms         BIGINT NOT NULL,
    state          TEXT NOT NULL
);
CREATE INDEX scheduler_retries_due ON scheduler_retries (state, due_ms);
CREATE INDEX scheduler_schedules_wake ON scheduler_schedules (active, wake_ms);
CREATE TABLE scheduler_merchants (
    merchant_id TEXT PRIMARY KEY,
    time_zone   TEXT NOT NULL,
    suspended   BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE scheduler_usage (
    usage_id       TEXT PRIMARY KEY,
    contract_id    TEXT NOT NULL,
    period         BIGINT NOT NULL,
    quantity       BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL
);
CREATE INDEX scheduler_usage_period ON scheduler_usage (contract_id, period);
CREATE TABLE scheduler_api_keys (
    key_id        TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    revoked       BIGINT NOT NULL
);
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
