-- Billing: monthly spend counters and limits, purchases and the tier they advance,
-- auto-reload, promotional programmes, and the audit log of who changed what.
--
-- Same conventions as 0001: timestamps are INTEGER unix milliseconds (UTC), money is
-- INTEGER nano-USD, and the store computes every amount in Rust; the CHECK constraints are
-- the second line of defence.

-- What the organization has bought, all time: the usage tier advances on it. Starter and
-- promotional credit never count. Written in the same transaction as the purchase's lot.
ALTER TABLE organizations ADD COLUMN cumulative_purchases_nanos INTEGER NOT NULL DEFAULT 0
    CHECK (cumulative_purchases_nanos >= 0);
-- A custom limit set an operator assigned instead of the tier ladder; NULL = the ladder.
ALTER TABLE organizations ADD COLUMN limit_set TEXT;
-- The organization's own monthly spend limit, lower than its tier's cap; NULL = none.
ALTER TABLE organizations ADD COLUMN spend_limit_nanos INTEGER CHECK (spend_limit_nanos > 0);

ALTER TABLE workspaces ADD COLUMN spend_limit_nanos INTEGER CHECK (spend_limit_nanos > 0);

-- A workspace's rate limits per model class; NULL inherits the organization's.
CREATE TABLE workspace_rate_limits (
    workspace_id             TEXT    NOT NULL REFERENCES workspaces (id),
    model_class              TEXT    NOT NULL,
    requests_per_minute      INTEGER CHECK (requests_per_minute > 0),
    input_tokens_per_minute  INTEGER CHECK (input_tokens_per_minute > 0),
    output_tokens_per_minute INTEGER CHECK (output_tokens_per_minute > 0),
    PRIMARY KEY (workspace_id, model_class)
);

-- The promotional programme a lot was granted under (e.g. 'startup'); only promotional
-- lots belong to one.
ALTER TABLE lots ADD COLUMN programme TEXT
    CHECK (programme IS NULL OR (kind = 'promotional' AND programme <> ''));

-- Spend per workspace per calendar month (UTC), the month a reservation was made in:
-- `held` is what its open reservations reserve, `settled` what its ended ones charged.
-- Running totals like `accounts`, checked by the audit against the reservations.
CREATE TABLE spend_counters (
    org_id        TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id  TEXT    NOT NULL,
    -- tollgate-core's `month_key`: year * 100 + month, e.g. 202611.
    month         INTEGER NOT NULL CHECK (month % 100 BETWEEN 1 AND 12),
    settled_nanos INTEGER NOT NULL DEFAULT 0 CHECK (settled_nanos >= 0),
    held_nanos    INTEGER NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
    PRIMARY KEY (org_id, workspace_id, month),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);

-- Counters for the reservations made before this migration, so that ending one of them
-- finds its counter and the audit balances. This one-off backfill is the only place these
-- totals are summed in SQL outside the audit.
INSERT INTO spend_counters (org_id, workspace_id, month, settled_nanos, held_nanos)
SELECT org_id,
       workspace_id,
       CAST(strftime('%Y%m', created_at / 1000, 'unixepoch') AS INTEGER) AS month,
       SUM(CASE WHEN state = 'settled' THEN charged ELSE 0 END),
       SUM(CASE WHEN state = 'pending' THEN amount ELSE 0 END)
FROM reservations
GROUP BY org_id, workspace_id, month;

-- Credit purchases, idempotent by (organization, idempotency key). A purchase is claimed
-- as 'pending' before the payment provider is charged and ends exactly once.
CREATE TABLE purchases (
    id                TEXT    PRIMARY KEY,
    org_id            TEXT    NOT NULL REFERENCES organizations (id),
    idempotency_key   TEXT    NOT NULL,
    amount_nanos      INTEGER NOT NULL CHECK (amount_nanos > 0),
    source            TEXT    NOT NULL CHECK (source IN ('manual', 'auto_reload')),
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'declined', 'failed')),
    payment_reference TEXT,
    failure_reason    TEXT,
    lot_id            TEXT    REFERENCES lots (id),
    created_at        INTEGER NOT NULL,
    completed_at      INTEGER,
    UNIQUE (org_id, idempotency_key),
    CHECK ((status = 'pending') = (completed_at IS NULL)),
    -- Exactly the succeeded purchases granted a lot, and were paid.
    CHECK ((status = 'succeeded') = (lot_id IS NOT NULL)),
    CHECK (status <> 'succeeded' OR payment_reference IS NOT NULL)
);

CREATE INDEX purchases_by_org ON purchases (org_id, created_at);
CREATE UNIQUE INDEX purchases_one_per_lot ON purchases (lot_id) WHERE lot_id IS NOT NULL;

-- Auto-reload settings, one row per organization. `in_flight_since` is the claim of the one
-- process buying a reload right now; a claim older than the stale bound may be taken over.
CREATE TABLE auto_reload (
    org_id          TEXT    PRIMARY KEY REFERENCES organizations (id),
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    threshold_nanos INTEGER NOT NULL CHECK (threshold_nanos > 0),
    amount_nanos    INTEGER NOT NULL CHECK (amount_nanos > 0),
    payment_method  TEXT    NOT NULL,
    in_flight_since INTEGER,
    -- Why auto-reload was turned off, shown to the customer until they turn it on again.
    notice          TEXT,
    updated_at      INTEGER NOT NULL
);

-- Who changed money or limits, what, and why. Append-only.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations (id),
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    details    TEXT    NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL
);

CREATE INDEX audit_events_by_org ON audit_events (org_id, id);

CREATE TRIGGER audit_events_are_append_only_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_are_append_only_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
