-- The summary, kept current one batch of events at a time, so reading it costs one row.
-- Times are UTC text of fixed width (2026-01-09T10:15:00.000000Z), so they sort as text.
CREATE TABLE order_totals (
    id                  INTEGER NOT NULL PRIMARY KEY,
    total_orders        INTEGER NOT NULL,
    total_quantity      INTEGER NOT NULL,
    total_revenue_minor INTEGER NOT NULL,
    last_updated        TEXT    NULL
);
