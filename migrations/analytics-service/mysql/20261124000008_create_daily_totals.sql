-- Orders and revenue per UTC day of the order's creation.
CREATE TABLE daily_totals (
    bucket_start  DATE   NOT NULL,
    orders        BIGINT NOT NULL,
    revenue_minor BIGINT NOT NULL,
    PRIMARY KEY (bucket_start)
) ENGINE = InnoDB;
