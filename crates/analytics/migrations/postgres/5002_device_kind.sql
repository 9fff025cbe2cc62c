-- The kind of device a signing page was first viewed on (from the page view's step), for
-- payer profiles. Every projection starts over from the beginning of the log so that sessions
-- viewed before this version get theirs too: the tables are emptied and the checkpoint removed.
ALTER TABLE analytics_signing_sessions ADD COLUMN device_kind TEXT NOT NULL DEFAULT '';
DELETE FROM consumer_checkpoints WHERE consumer = 'analytics.projections';
DELETE FROM analytics_merchants;
DELETE FROM analytics_contracts;
DELETE FROM analytics_charges;
DELETE FROM analytics_signing_sessions;
DELETE FROM analytics_notices;
DELETE FROM analytics_refunds;
DELETE FROM analytics_counters;
DELETE FROM analytics_merchant_counters;
