-- The log: one row per event, append-only. Readers follow (transaction_id, position), which
-- is commit-safe: see src/postgres.rs.
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY,
    transaction_id XID8   NOT NULL DEFAULT pg_current_xact_id(),
    stream         TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    event_type     TEXT   NOT NULL,
    event_id       UUID   NOT NULL,
    payload        BYTEA  NOT NULL,
    metadata       BYTEA  NOT NULL,
    recorded_at    BIGINT NOT NULL,
    -- Commit-safe read order is the key: readers range-scan it from a checkpoint.
    PRIMARY KEY (transaction_id, position),
    UNIQUE (stream, version)
);
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('autodebit_events', ''); RETURN NULL; END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
CREATE TABLE consumer_checkpoints (
    consumer       TEXT   PRIMARY KEY,
    transaction_id BIGINT NOT NULL,
    position       BIGINT NOT NULL
);
