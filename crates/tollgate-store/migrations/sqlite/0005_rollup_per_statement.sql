-- The twin of PostgreSQL's 0005, which keeps the hourly usage rollup once per statement
-- instead of once per record. SQLite has row-level triggers only, and its writer inserts
-- usage records one statement each, so its rollup (0003) stays as it is.
SELECT 1;
