-- Refunds and lost disputes of paid purchases (#22).
--
-- Same conventions as 0001: timestamps are INTEGER unix milliseconds (UTC), money INTEGER
-- nano-USD. What a reversal takes back is decided by tollgate-core (`refunds`); these
-- tables record it, and the audit recomputes the purchase's totals from its rows.

-- A purchase's running totals: refunded and lost in disputes (together at most its
-- amount), and the part of those that its lot no longer had (spent or held), recorded
-- instead of taken.
ALTER TABLE purchases ADD COLUMN refunded_nanos INTEGER NOT NULL DEFAULT 0 CHECK (refunded_nanos >= 0);
ALTER TABLE purchases ADD COLUMN disputed_nanos INTEGER NOT NULL DEFAULT 0 CHECK (disputed_nanos >= 0);
ALTER TABLE purchases ADD COLUMN unrecovered_nanos INTEGER NOT NULL DEFAULT 0 CHECK (unrecovered_nanos >= 0);

-- One row per provider event that reversed part of a purchase, written in the event's
-- transaction (its id is in `payment_events`). `reference` is the provider's charge (a
-- refund) or dispute id; a dispute is reversed at most once.
CREATE TABLE purchase_reversals (
    id                INTEGER PRIMARY KEY,
    purchase_id       TEXT    NOT NULL REFERENCES purchases (id),
    org_id            TEXT    NOT NULL REFERENCES organizations (id),
    event_id          TEXT    NOT NULL UNIQUE REFERENCES payment_events (event_id),
    kind              TEXT    NOT NULL CHECK (kind IN ('refund', 'dispute')),
    reference         TEXT    NOT NULL,
    amount_nanos      INTEGER NOT NULL CHECK (amount_nanos > 0),
    recovered_nanos   INTEGER NOT NULL CHECK (recovered_nanos >= 0),
    unrecovered_nanos INTEGER NOT NULL CHECK (unrecovered_nanos >= 0),
    created_at        INTEGER NOT NULL,
    CHECK (recovered_nanos + unrecovered_nanos = amount_nanos)
);

CREATE INDEX purchase_reversals_by_purchase ON purchase_reversals (purchase_id, created_at);
CREATE UNIQUE INDEX purchase_reversals_one_per_dispute
    ON purchase_reversals (purchase_id, reference) WHERE kind = 'dispute';

-- The journal gains the kind `reversal`: what a reversal recovers, posted from the
-- purchase's lot back to the organization's purchases account. SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt with every row, index and trigger as before.
-- Nothing references `transfers`, so dropping it (with foreign keys on) deletes no other
-- row, and the implicit delete of a DROP fires no trigger.
CREATE TABLE transfers_rebuilt (
    id                INTEGER PRIMARY KEY,
    org_id            TEXT    NOT NULL REFERENCES organizations (id),
    debit_account_id  INTEGER NOT NULL REFERENCES accounts (id),
    credit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount            INTEGER NOT NULL CHECK (amount > 0),
    kind              TEXT    NOT NULL CHECK (kind IN ('grant', 'usage', 'expiry', 'reversal')),
    reservation_id    TEXT    REFERENCES reservations (id),
    lot_id            TEXT    REFERENCES lots (id),
    created_at        INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);

INSERT INTO transfers_rebuilt
    (id, org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id, created_at)
SELECT id, org_id, debit_account_id, credit_account_id, amount, kind, reservation_id, lot_id, created_at
FROM transfers ORDER BY id;

DROP TABLE transfers;

ALTER TABLE transfers_rebuilt RENAME TO transfers;

CREATE INDEX transfers_by_org ON transfers (org_id, created_at);
CREATE INDEX transfers_by_reservation ON transfers (reservation_id) WHERE reservation_id IS NOT NULL;
CREATE INDEX transfers_by_lot ON transfers (lot_id) WHERE lot_id IS NOT NULL;

CREATE TRIGGER transfers_are_append_only_update BEFORE UPDATE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'transfers are append-only');
END;

CREATE TRIGGER transfers_are_append_only_delete BEFORE DELETE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'transfers are append-only');
END;
