CREATE TABLE customer_totals (
    customer_id    TEXT    NOT NULL PRIMARY KEY,
    orders         INTEGER NOT NULL,
    quantity       INTEGER NOT NULL,
    revenue_minor  INTEGER NOT NULL,
    first_order_at TEXT    NOT NULL,
    last_order_at  TEXT    NOT NULL
) WITHOUT ROWID;
