INSERT INTO order_totals (id, total_orders, total_quantity, total_revenue_minor, last_updated) VALUES (1, 0, 0, 0, NULL);
