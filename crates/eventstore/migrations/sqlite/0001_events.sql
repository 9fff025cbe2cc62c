-- The log: one row per event, append-only; `position` is the global order.
CREATE TABLE events (
    position     INTEGER PRIMARY KEY,
    stream       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    event_type   TEXT    NOT NULL,
    event_id     BLOB    NOT NULL,
    payload      BLOB    NOT NULL,
    metadata     BLOB    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    UNIQUE (stream, version)
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TABLE consumer_checkpoints (
    consumer       TEXT PRIMARY KEY,
    transaction_id INTEGER NOT NULL,
    position       INTEGER NOT NULL
);
