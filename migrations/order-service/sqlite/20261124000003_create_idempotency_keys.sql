-- Idempotency-Key header values: a retried request with the same key and body gets the original
-- order back; the same key with another body is a conflict. Keys compare byte for byte.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT NOT NULL PRIMARY KEY,
    request_hash    BLOB NOT NULL,
    order_id        BLOB NOT NULL,
    created_at      TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX ix_idempotency_created ON idempotency_keys (created_at);
