-- Orders and revenue per UTC day of the order's creation; bucket_start is the day's midnight, in
-- the fixed-width time format.
CREATE TABLE daily_totals (
    bucket_start  TEXT    NOT NULL PRIMARY KEY,
    orders        INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL
) WITHOUT ROWID;
