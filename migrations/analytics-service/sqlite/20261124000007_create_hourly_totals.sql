-- Orders and revenue per UTC hour of the order's creation; bucket_start is the hour's first
-- instant, in the fixed-width time format.
CREATE TABLE hourly_totals (
    bucket_start  TEXT    NOT NULL PRIMARY KEY,
    orders        INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL
) WITHOUT ROWID;
