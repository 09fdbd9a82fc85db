-- Inbox: every event whose effect is in the aggregates, recorded in the same transaction as that
-- effect. A redelivered event finds its id here and changes nothing.
CREATE TABLE processed_events (
    event_id     BINARY(16)  NOT NULL,
    processed_at DATETIME(6) NOT NULL,
    PRIMARY KEY (event_id),
    KEY ix_processed_events_at (processed_at)
) ENGINE = InnoDB;
