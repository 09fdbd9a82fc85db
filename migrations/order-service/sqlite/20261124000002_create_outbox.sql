-- Events waiting to be published, written in the same transaction as the change they describe.
CREATE TABLE outbox (
    -- AUTOINCREMENT: ids are never reused, so they keep the order rows were written in.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      BLOB    NOT NULL UNIQUE,
    event_type    TEXT    NOT NULL,
    routing_key   TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    headers       TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    -- Next time the row may be claimed: now for new rows, lease end while being published,
    -- backoff end after a failed publish.
    available_at  TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT    NULL,
    published_at  TEXT    NULL
);

CREATE INDEX ix_outbox_due ON outbox (published_at, available_at);
