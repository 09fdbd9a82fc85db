-- Inbox: every event whose effect is in the aggregates, recorded in the same transaction as that
-- effect. A redelivered event finds its id here and changes nothing.
CREATE TABLE processed_events (
    event_id     BLOB NOT NULL PRIMARY KEY,
    processed_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX ix_processed_events_at ON processed_events (processed_at);
