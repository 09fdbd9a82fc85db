CREATE TABLE customer_totals (
    customer_id    VARCHAR(128) NOT NULL,
    orders         BIGINT       NOT NULL,
    quantity       BIGINT       NOT NULL,
    revenue_minor  BIGINT       NOT NULL,
    first_order_at DATETIME(6)  NOT NULL,
    last_order_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
