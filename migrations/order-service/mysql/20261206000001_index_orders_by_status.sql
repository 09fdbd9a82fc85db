-- GET /orders?status= lists newest first within a status.
ALTER TABLE orders ADD INDEX ix_orders_status (status, id);
