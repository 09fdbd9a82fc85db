-- Which notifications went out, per channel and event, for the embedded worker's deduplication
-- (what the keys `notified:<channel>:<event_id>` hold in Redis in production). Times are UTC text
-- of fixed width (2026-01-09T10:15:00.000000Z), so they sort as text.
CREATE TABLE notifications (
    channel    TEXT NOT NULL,
    event_id   BLOB NOT NULL,
    -- 'pending' while a worker sends it, 'sent' once it went out.
    status     TEXT NOT NULL,
    -- When the claim ends ('pending') or the notification is forgotten ('sent').
    expires_at TEXT NOT NULL,
    PRIMARY KEY (channel, event_id)
) WITHOUT ROWID;

CREATE INDEX ix_notifications_expires ON notifications (expires_at);
