-- The W3C trace context each attempt continues (its charge's scheduling), so an attempt
-- claimed from the table (after a restart, or when no slot was free) stays in its trace.
ALTER TABLE charger_attempts ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
