-- Which log the projections were made from: the id of its first event (hex). On SQLite the
-- projections have a database file of their own beside the log's; a log started afresh beside
-- an old projections file is told apart by it, and the projections start over.
CREATE TABLE analytics_log (
    first_event_id TEXT NOT NULL
);
