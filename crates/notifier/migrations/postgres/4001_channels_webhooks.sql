-- Notices on real channels, merchant webhooks, tracked links (the same on both backends).

-- A notice's merchant, language, short link, where its delivery stands, when it was opened and
-- converted. Notices recorded before this migration were told on the log channel: 'sent'.
ALTER TABLE notifier_notices ADD COLUMN merchant_id TEXT NOT NULL DEFAULT '';
ALTER TABLE notifier_notices ADD COLUMN language TEXT NOT NULL DEFAULT 'zh-CN';
ALTER TABLE notifier_notices ADD COLUMN link_token TEXT NOT NULL DEFAULT '';
ALTER TABLE notifier_notices ADD COLUMN state TEXT NOT NULL DEFAULT 'sent';     -- pending | sent | delivered | undelivered | failed
ALTER TABLE notifier_notices ADD COLUMN opened_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifier_notices ADD COLUMN converted_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX notifier_notices_link ON notifier_notices (link_token);

-- What notices about a contract need that its later events do not carry.
ALTER TABLE notifier_contracts ADD COLUMN payer_id TEXT NOT NULL DEFAULT '';
ALTER TABLE notifier_contracts ADD COLUMN phone TEXT NOT NULL DEFAULT '';
ALTER TABLE notifier_contracts ADD COLUMN language TEXT NOT NULL DEFAULT '';
ALTER TABLE notifier_contracts ADD COLUMN service_name TEXT NOT NULL DEFAULT '';

-- Merchants' names, for notices that name them.
CREATE TABLE notifier_merchants (
    merchant_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL
);

-- The outbox of notices: one row per notice, written with it, worked through after commit.
CREATE TABLE notifier_outbox (
    notice_id     TEXT PRIMARY KEY,
    merchant_id   TEXT NOT NULL,
    payload       TEXT NOT NULL,      -- JSON: what the channels need
    channels      TEXT NOT NULL,      -- comma-separated, in the order tried
    channel_index BIGINT NOT NULL,    -- the channel being tried
    attempt       BIGINT NOT NULL,    -- tries made, all channels together
    state         TEXT NOT NULL,      -- pending | sending (outcome unknown) | done
    next_at_ms    BIGINT NOT NULL,    -- platform clock
    payer_acted   BIGINT NOT NULL     -- 1: quiet hours do not hold it back
);
CREATE INDEX notifier_outbox_due ON notifier_outbox (state, next_at_ms);

-- Every try of a notice on a channel, and the channels' receipts.
CREATE TABLE notifier_deliveries (
    notice_id           TEXT NOT NULL,
    seq                 BIGINT NOT NULL,
    channel             TEXT NOT NULL,
    outcome             BIGINT NOT NULL,  -- DeliveryOutcome
    provider_message_id TEXT NOT NULL,
    detail              TEXT NOT NULL,
    at_ms               BIGINT NOT NULL,
    PRIMARY KEY (notice_id, seq)
);
CREATE INDEX notifier_deliveries_message ON notifier_deliveries (channel, provider_message_id);

-- Each merchant's notifier settings (protobuf NotifierSettings, base64) and own templates.
CREATE TABLE notifier_settings (
    merchant_id TEXT PRIMARY KEY,
    settings    TEXT NOT NULL
);
CREATE TABLE notifier_templates (
    merchant_id TEXT NOT NULL,
    kind        BIGINT NOT NULL,
    language    TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (merchant_id, kind, language)
);

-- Webhook endpoints, kept from their streams.
CREATE TABLE notifier_webhook_endpoints (
    endpoint_id      TEXT PRIMARY KEY,
    merchant_id      TEXT NOT NULL,
    url              TEXT NOT NULL,
    event_types      TEXT NOT NULL,     -- comma-separated
    description      TEXT NOT NULL,
    enabled          BIGINT NOT NULL,
    disabled_reason  TEXT NOT NULL,
    generation       BIGINT NOT NULL,
    deleted          BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    failing_since_ms BIGINT NOT NULL    -- 0 while its last delivery succeeded
);
CREATE INDEX notifier_webhook_endpoints_merchant ON notifier_webhook_endpoints (merchant_id);

-- The outbox of webhook deliveries: one row per event and endpoint, written with the follower's
-- checkpoint, sent after commit; kept as the endpoint's delivery history.
CREATE TABLE notifier_webhook_outbox (
    delivery_id   TEXT PRIMARY KEY,    -- the webhook-id
    endpoint_id   TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL,       -- pending | sending (outcome unknown) | succeeded | failed
    attempts      BIGINT NOT NULL,
    next_at_ms    BIGINT NOT NULL,
    last_status   BIGINT NOT NULL,
    last_error    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX notifier_webhook_outbox_due ON notifier_webhook_outbox (state, next_at_ms);
CREATE INDEX notifier_webhook_outbox_endpoint ON notifier_webhook_outbox (endpoint_id, created_at_ms);

-- Keys the notifier makes once and keeps: the webhook signing key endpoint secrets derive from
-- (unless AUTODEBIT_WEBHOOK_KEY gives one).
CREATE TABLE notifier_keys (
    name TEXT PRIMARY KEY,
    key  TEXT NOT NULL
);
