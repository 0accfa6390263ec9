-- One row that `/health/ready` rewrites: a real committed write, so readiness fails when
-- the database cannot take writes (disk full, read-only file, lost server) even while
-- reads still work.
CREATE TABLE health_checks (
    slot       INTEGER PRIMARY KEY CHECK (slot = 1),
    checked_at INTEGER NOT NULL
);
