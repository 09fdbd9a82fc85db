-- Orders and revenue per UTC hour of the order's creation.
CREATE TABLE hourly_totals (
    bucket_start  DATETIME NOT NULL,
    orders        BIGINT   NOT NULL,
    revenue_minor BIGINT   NOT NULL,
    PRIMARY KEY (bucket_start)
) ENGINE = InnoDB;
