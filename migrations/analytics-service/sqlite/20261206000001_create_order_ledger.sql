-- Every order analytics has heard of, and where it stands: its facts once its OrderCreated has
-- arrived, and when it was cancelled once its OrderCancelled has (see the MySQL migration).
CREATE TABLE order_ledger (
    order_id     BLOB    NOT NULL PRIMARY KEY,
    customer_id  TEXT    NULL,
    product_id   TEXT    NULL,
    quantity     INTEGER NULL,
    total_minor  INTEGER NULL,
    created_at   TEXT    NULL,
    cancelled_at TEXT    NULL
) WITHOUT ROWID;

CREATE INDEX ix_order_ledger_customer ON order_ledger (customer_id, created_at);

ALTER TABLE order_totals ADD COLUMN cancelled_orders INTEGER NOT NULL DEFAULT 0;
ALTER TABLE order_totals ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
UPDATE order_totals SET revision = total_orders;
