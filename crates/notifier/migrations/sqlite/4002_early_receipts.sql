-- Channel receipts that came before the send they report on was recorded (Tencent posts an SMS
-- delivery report as soon as it accepts the message, which can be before the sender has written
-- the message's serial number down); the sender applies them when it records the send.
CREATE TABLE notifier_early_receipts (
    channel             TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    delivered           BIGINT NOT NULL,   -- 1: delivered; 0: not
    detail              TEXT NOT NULL,
    at_ms               BIGINT NOT NULL,
    PRIMARY KEY (channel, provider_message_id)
);
