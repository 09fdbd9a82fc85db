-- A row now leaves the outbox as soon as the broker confirms its event, so the table holds only
-- what waits to be published. Rows kept as published before that go; the claim reads due rows
-- in the order of this index.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX ix_outbox_due;
ALTER TABLE outbox DROP COLUMN published_at;
CREATE INDEX ix_outbox_due ON outbox (available_at, id);
