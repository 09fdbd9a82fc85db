-- Messages the in-process bus parked (its dead-letter queues), one row per queue and message.
-- Times are UTC text of fixed width (2026-01-09T10:15:00.000000Z), so they sort as text.
CREATE TABLE parked_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT    NOT NULL,
    message_id  TEXT    NULL,
    event_type  TEXT    NULL,
    routing_key TEXT    NOT NULL,
    -- JSON object of the message's text headers (e.g. traceparent).
    headers     TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    reason      TEXT    NOT NULL,
    parked_at   TEXT    NOT NULL,
    -- 1 once an operator asked for it to be delivered again; the row goes when it is handled.
    replay      INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX ix_parked_messages_queue ON parked_messages (queue, replay, id);
