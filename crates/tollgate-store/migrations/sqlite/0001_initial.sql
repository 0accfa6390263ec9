-- The whole schema of tollgate's durable state, SQLite dialect.
--
-- Conventions: timestamps are INTEGER unix milliseconds (UTC); money is INTEGER nano-USD.
-- Balances are never computed here: the store loads rows, asks tollgate-core what changes,
-- and writes the result. The CHECK constraints are a second line of defence behind the
-- core's rules, so a bug fails a transaction instead of overdrawing a lot.

CREATE TABLE organizations (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES organizations (id),
    name        TEXT    NOT NULL,
    is_default  INTEGER NOT NULL CHECK (is_default IN (0, 1)),
    created_at  INTEGER NOT NULL,
    archived_at INTEGER,
    UNIQUE (org_id, name),
    -- The target of composite foreign keys that pin a row to a workspace of its own org.
    UNIQUE (id, org_id)
);

CREATE UNIQUE INDEX workspaces_one_default_per_org ON workspaces (org_id) WHERE is_default = 1;

-- Double-entry accounts with TigerBeetle's four running totals.
CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    org_id          TEXT    NOT NULL REFERENCES organizations (id),
    kind            TEXT    NOT NULL CHECK (kind IN
                        ('lot', 'starter_grants', 'promotional_grants', 'purchases', 'spend', 'expired')),
    debits_pending  INTEGER NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted   INTEGER NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted  INTEGER NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    -- A lot may never be overdrawn, counting what is reserved from it.
    CHECK (kind <> 'lot' OR debits_posted + debits_pending <= credits_posted)
);

CREATE UNIQUE INDEX accounts_one_system_account_per_kind ON accounts (org_id, kind) WHERE kind <> 'lot';

CREATE TABLE lots (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES organizations (id),
    account_id  INTEGER NOT NULL UNIQUE REFERENCES accounts (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('starter', 'purchase', 'promotional')),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    granted_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    memo        TEXT    NOT NULL,
    CHECK (expires_at IS NULL OR expires_at > granted_at)
);

CREATE INDEX lots_by_org ON lots (org_id);
CREATE INDEX lots_by_expiry ON lots (expires_at) WHERE expires_at IS NOT NULL;
-- The starter credit is granted once per organization.
CREATE UNIQUE INDEX lots_one_starter_per_org ON lots (org_id) WHERE kind = 'starter';

CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('api', 'admin')),
    org_id       TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id TEXT,
    name         TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL UNIQUE,
    hint         TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('active', 'inactive', 'archived')),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);

CREATE INDEX api_keys_by_org ON api_keys (org_id, kind, created_at);

CREATE TABLE reservations (
    id           TEXT    PRIMARY KEY,
    org_id       TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id TEXT    NOT NULL,
    api_key_id   TEXT    REFERENCES api_keys (id),
    request_id   TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    amount       INTEGER NOT NULL CHECK (amount > 0),
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'settled', 'voided')),
    created_at   INTEGER NOT NULL,
    deadline     INTEGER NOT NULL,
    ended_at     INTEGER,
    charged      INTEGER CHECK (charged >= 0),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id),
    -- A reservation ends exactly once, and an ended one says when and for how much.
    CHECK ((state = 'pending') = (ended_at IS NULL)),
    CHECK ((state = 'pending') = (charged IS NULL))
);

-- The reaper's and the operator's view: only open reservations are indexed.
CREATE INDEX reservations_pending_by_deadline ON reservations (deadline) WHERE state = 'pending';
CREATE INDEX reservations_pending_by_org ON reservations (org_id) WHERE state = 'pending';

-- One pending amount per lot a reservation draws on, in drawdown order.
CREATE TABLE reservation_lines (
    reservation_id TEXT    NOT NULL REFERENCES reservations (id),
    line_no        INTEGER NOT NULL CHECK (line_no >= 0),
    lot_id         TEXT    NOT NULL REFERENCES lots (id),
    account_id     INTEGER NOT NULL REFERENCES accounts (id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (reservation_id, line_no)
);

-- The journal of posted transfers. Append-only: totals in `accounts` are checked against it.
CREATE TABLE transfers (
    id                INTEGER PRIMARY KEY,
    org_id            TEXT    NOT NULL REFERENCES organizations (id),
    debit_account_id  INTEGER NOT NULL REFERENCES accounts (id),
    credit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount            INTEGER NOT NULL CHECK (amount > 0),
    kind              TEXT    NOT NULL CHECK (kind IN ('grant', 'usage', 'expiry')),
    reservation_id    TEXT    REFERENCES reservations (id),
    lot_id            TEXT    REFERENCES lots (id),
    created_at        INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);

CREATE INDEX transfers_by_org ON transfers (org_id, created_at);
CREATE INDEX transfers_by_reservation ON transfers (reservation_id) WHERE reservation_id IS NOT NULL;

CREATE TRIGGER transfers_are_append_only_update BEFORE UPDATE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'transfers are append-only');
END;

CREATE TRIGGER transfers_are_append_only_delete BEFORE DELETE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'transfers are append-only');
END;

CREATE TABLE usage_records (
    id                             INTEGER PRIMARY KEY,
    request_id                     TEXT    NOT NULL,
    org_id                         TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id                   TEXT    NOT NULL,
    api_key_id                     TEXT    REFERENCES api_keys (id),
    model                          TEXT    NOT NULL,
    input_tokens                   INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens                  INTEGER NOT NULL CHECK (output_tokens >= 0),
    cache_creation_5m_input_tokens INTEGER NOT NULL CHECK (cache_creation_5m_input_tokens >= 0),
    cache_creation_1h_input_tokens INTEGER NOT NULL CHECK (cache_creation_1h_input_tokens >= 0),
    cache_read_input_tokens        INTEGER NOT NULL CHECK (cache_read_input_tokens >= 0),
    cost_nanos                     INTEGER NOT NULL CHECK (cost_nanos >= 0),
    status                         TEXT    NOT NULL CHECK (status IN
                                       ('succeeded', 'failed', 'refused', 'client_disconnected', 'abandoned')),
    error_type                     TEXT,
    latency_ms                     INTEGER NOT NULL CHECK (latency_ms >= 0),
    started_at                     INTEGER NOT NULL,
    ended_at                       INTEGER NOT NULL,
    reservation_id                 TEXT    REFERENCES reservations (id),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);

CREATE INDEX usage_records_by_org_time ON usage_records (org_id, ended_at);
