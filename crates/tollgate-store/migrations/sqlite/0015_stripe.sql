-- Payments through an external provider (Stripe): the provider's customer per organization
-- with its saved payment method, and the provider's events already applied.
--
-- Same conventions as 0001: timestamps are INTEGER unix milliseconds (UTC). No card number
-- is ever stored: only the provider's ids and the card's brand and last four digits.

-- The provider's customer of an organization and the payment method saved for off-session
-- charges (auto-reload), with what the Console shows of the card.
CREATE TABLE payment_customers (
    org_id            TEXT    PRIMARY KEY REFERENCES organizations (id),
    customer_id       TEXT    NOT NULL UNIQUE,
    payment_method_id TEXT,
    card_brand        TEXT,
    card_last4        TEXT    CHECK (card_last4 IS NULL OR length(card_last4) = 4),
    updated_at        INTEGER NOT NULL
);

-- Every provider event applied, by its id: inserted in the same transaction as the event's
-- effect, so a redelivered event finds its id and changes nothing.
CREATE TABLE payment_events (
    event_id    TEXT    PRIMARY KEY,
    event_type  TEXT    NOT NULL,
    purchase_id TEXT    REFERENCES purchases (id),
    received_at INTEGER NOT NULL
);

CREATE INDEX payment_events_by_purchase ON payment_events (purchase_id);
