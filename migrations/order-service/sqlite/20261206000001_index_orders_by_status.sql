-- GET /orders?status= lists newest first within a status.
CREATE INDEX ix_orders_status ON orders (status, id);
