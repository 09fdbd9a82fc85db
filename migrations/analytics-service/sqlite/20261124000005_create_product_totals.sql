-- Per product; the two indexes answer "top products" by reading only the rows returned.
CREATE TABLE product_totals (
    product_id    TEXT    NOT NULL PRIMARY KEY,
    orders        INTEGER NOT NULL,
    quantity      INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX ix_product_totals_revenue ON product_totals (revenue_minor, product_id);
CREATE INDEX ix_product_totals_quantity ON product_totals (quantity, product_id);
