-- Per product; the two indexes answer "top products" by reading only the rows returned.
CREATE TABLE product_totals (
    product_id    VARCHAR(128) NOT NULL,
    orders        BIGINT       NOT NULL,
    quantity      BIGINT       NOT NULL,
    revenue_minor BIGINT       NOT NULL,
    PRIMARY KEY (product_id),
    KEY ix_product_totals_revenue (revenue_minor, product_id),
    KEY ix_product_totals_quantity (quantity, product_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
