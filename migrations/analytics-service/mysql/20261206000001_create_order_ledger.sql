-- Every order analytics has heard of, and where it stands: its facts once its OrderCreated has
-- arrived, and when it was cancelled once its OrderCancelled has. Events of one order can
-- arrive in any order (retries, parking, replay); this row is what makes each change count once
-- whatever the order: a cancellation subtracts the facts of a counted order, and an order whose
-- cancellation came first is never counted. One row per order, kept for as long as the order
-- could be cancelled.
CREATE TABLE order_ledger (
    order_id     BINARY(16)   NOT NULL,
    customer_id  VARCHAR(128) NULL,
    product_id   VARCHAR(128) NULL,
    quantity     BIGINT       NULL,
    total_minor  BIGINT       NULL,
    created_at   DATETIME(6)  NULL,
    cancelled_at DATETIME(6)  NULL,
    PRIMARY KEY (order_id),
    KEY ix_order_ledger_customer (customer_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Cancelled orders, and a revision that grows with every change of the figures (the version of
-- the cached summary, which used to be total_orders: it starts from there).
ALTER TABLE order_totals
    ADD COLUMN cancelled_orders BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN revision         BIGINT NOT NULL DEFAULT 0;
UPDATE order_totals SET revision = total_orders;
