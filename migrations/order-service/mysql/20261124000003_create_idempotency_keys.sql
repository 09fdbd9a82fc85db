-- Idempotency-Key header values: a retried request with the same key and body gets the original
-- order back; the same key with another body is a conflict.
CREATE TABLE idempotency_keys (
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash    BINARY(32)   NOT NULL,
    order_id        BINARY(16)   NOT NULL,
    created_at      DATETIME(6)  NOT NULL,
    PRIMARY KEY (idempotency_key),
    KEY ix_idempotency_created (created_at)
) ENGINE = InnoDB;
