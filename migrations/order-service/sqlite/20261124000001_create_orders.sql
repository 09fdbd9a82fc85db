-- Orders (SQLite twin of the MySQL schema). Money in integer minor units (cents); ids are UUIDv7
-- stored as 16-byte BLOBs, which compare byte by byte, i.e. in creation order: newest-first
-- listing and keyset pagination walk the primary key. Times are UTC text of fixed width
-- (2026-01-09T10:15:00.000000Z), so they sort as text.
CREATE TABLE orders (
    id           BLOB    NOT NULL PRIMARY KEY,
    customer_id  TEXT    NOT NULL,
    product_id   TEXT    NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity >= 0),
    total_minor  INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX ix_orders_customer ON orders (customer_id, id);
