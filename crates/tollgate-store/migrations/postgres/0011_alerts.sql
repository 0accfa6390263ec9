-- Alerts (issue #17). An organization's destinations (a signed webhook or an email
-- address) and thresholds; the claims that make each alert fire once per crossing across
-- replicas (a unique row per organization, alert kind and subject: the threshold, the
-- month, the key; deleted when the condition clears, which re-arms it); and the outbox of
-- deliveries every replica's delivery loop drains under leases, with each attempt recorded.
CREATE TABLE alert_destinations (
    id         TEXT   PRIMARY KEY,
    org_id     TEXT   NOT NULL REFERENCES organizations (id),
    channel    TEXT   NOT NULL CHECK (channel IN ('webhook', 'email')),
    target     TEXT   NOT NULL,
    -- The webhook's signing secret; NULL for email.
    secret     TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX alert_destinations_by_org ON alert_destinations (org_id, created_at);

CREATE TABLE alert_settings (
    org_id                  TEXT   PRIMARY KEY REFERENCES organizations (id),
    -- NULL: no balance alert.
    balance_threshold_nanos BIGINT CHECK (balance_threshold_nanos >= 0),
    key_expiry_days         BIGINT NOT NULL CHECK (key_expiry_days >= 0),
    updated_at              BIGINT NOT NULL
);

CREATE TABLE alert_claims (
    org_id     TEXT   NOT NULL REFERENCES organizations (id),
    kind       TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, kind, subject)
);

CREATE TABLE alert_deliveries (
    id              TEXT   PRIMARY KEY,
    org_id          TEXT   NOT NULL REFERENCES organizations (id),
    destination_id  TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    -- The event as JSON text, signed as it is at each attempt.
    payload         TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT,
    leased_by       TEXT,
    leased_until    BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alert_deliveries_by_org ON alert_deliveries (org_id, created_at);

CREATE TABLE alert_delivery_attempts (
    delivery_id     TEXT   NOT NULL REFERENCES alert_deliveries (id),
    attempt         BIGINT NOT NULL,
    attempted_at    BIGINT NOT NULL,
    outcome         TEXT   NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    response_status BIGINT,
    error           TEXT,
    next_attempt_at BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);

-- An API key may expire: refused from then on, and its organization alerted before.
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
