-- The summary, kept current one batch of events at a time, so reading it costs one row.
CREATE TABLE order_totals (
    id                  TINYINT     NOT NULL,
    total_orders        BIGINT      NOT NULL,
    total_quantity      BIGINT      NOT NULL,
    total_revenue_minor BIGINT      NOT NULL,
    last_updated        DATETIME(6) NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;
