-- Orders. Money in integer minor units (cents); ids are UUIDv7 (time-ordered), stored as 16 bytes
-- so that primary-key inserts append to the index and newest-first listing is a reverse index scan.
CREATE TABLE orders (
    id           BINARY(16)   NOT NULL,
    customer_id  VARCHAR(128) NOT NULL,
    product_id   VARCHAR(128) NOT NULL,
    quantity     INT UNSIGNED NOT NULL,
    total_minor  BIGINT       NOT NULL,
    status       VARCHAR(16)  NOT NULL,
    created_at   DATETIME(6)  NOT NULL,
    updated_at   DATETIME(6)  NOT NULL,
    PRIMARY KEY (id),
    KEY ix_orders_customer (customer_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
