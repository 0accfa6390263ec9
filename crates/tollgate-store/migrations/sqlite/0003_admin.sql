-- The Admin API: who created each key, users with their organization roles, invites,
-- workspace members, and the hourly usage rollup the usage and cost reports read.
--
-- Same conventions as 0001: timestamps are INTEGER unix milliseconds (UTC), money is
-- INTEGER nano-USD.

-- Who created a key: ('user', user id), ('admin_key', admin key id) or ('system', what).
-- Keys created before this migration were created by the first start or the CLI.
ALTER TABLE api_keys ADD COLUMN created_by_type TEXT NOT NULL DEFAULT 'system'
    CHECK (created_by_type IN ('user', 'admin_key', 'system'));
ALTER TABLE api_keys ADD COLUMN created_by_id TEXT NOT NULL DEFAULT 'system';

CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id) WHERE workspace_id IS NOT NULL;

-- Members of an organization. An email is a member of an organization at most once.
CREATE TABLE users (
    id       TEXT    PRIMARY KEY,
    org_id   TEXT    NOT NULL REFERENCES organizations (id),
    email    TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    role     TEXT    NOT NULL CHECK (role IN ('user', 'developer', 'billing', 'admin', 'claude_code_user')),
    added_at INTEGER NOT NULL,
    UNIQUE (org_id, email),
    UNIQUE (id, org_id)
);

-- Invitations to join an organization. 'expired' is never stored: a pending invite past its
-- expiry reads as expired.
CREATE TABLE invites (
    id         TEXT    PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations (id),
    email      TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('user', 'developer', 'billing', 'claude_code_user')),
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'accepted')),
    invited_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL CHECK (expires_at > invited_at)
);

CREATE INDEX invites_by_org ON invites (org_id, invited_at);

-- A user's role in one workspace of their own organization.
CREATE TABLE workspace_members (
    workspace_id   TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    org_id         TEXT    NOT NULL,
    workspace_role TEXT    NOT NULL CHECK (workspace_role IN
                       ('workspace_user', 'workspace_developer', 'workspace_admin', 'workspace_billing')),
    added_at       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id),
    FOREIGN KEY (user_id, org_id) REFERENCES users (id, org_id) ON DELETE CASCADE
);

CREATE INDEX workspace_members_by_user ON workspace_members (user_id);

-- Charged usage per hour (of the request's end), workspace, key, model and context window:
-- what the usage and cost reports read, so that a month's report reads thousands of rows
-- instead of every request.
--
-- It is a derived total kept by the trigger below, inside the transaction that writes the
-- usage record (the settlement's), so it can never disagree with the ledger it summarises:
-- `cost_nanos` adds the reservation's `charged`, the ledger's own figure for the request,
-- not a price computed here. Only charged requests count (succeeded, or the client left),
-- as only they are billed. `api_key_id` is '' for usage without a key. The store's
-- `usage_rollup_problems` recomputes every row from the usage records.
CREATE TABLE usage_hourly (
    org_id                         TEXT    NOT NULL REFERENCES organizations (id),
    hour                           INTEGER NOT NULL CHECK (hour % 3600000 = 0),
    workspace_id                   TEXT    NOT NULL,
    api_key_id                     TEXT    NOT NULL,
    model                          TEXT    NOT NULL,
    context_window                 TEXT    NOT NULL CHECK (context_window IN ('0-200k', '200k-1M')),
    requests                       INTEGER NOT NULL CHECK (requests >= 0),
    input_tokens                   INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens                  INTEGER NOT NULL CHECK (output_tokens >= 0),
    cache_creation_5m_input_tokens INTEGER NOT NULL CHECK (cache_creation_5m_input_tokens >= 0),
    cache_creation_1h_input_tokens INTEGER NOT NULL CHECK (cache_creation_1h_input_tokens >= 0),
    cache_read_input_tokens        INTEGER NOT NULL CHECK (cache_read_input_tokens >= 0),
    cost_nanos                     INTEGER NOT NULL CHECK (cost_nanos >= 0),
    PRIMARY KEY (org_id, hour, workspace_id, api_key_id, model, context_window)
) WITHOUT ROWID;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
WHEN NEW.status IN ('succeeded', 'client_disconnected')
BEGIN
    INSERT INTO usage_hourly
        (org_id, hour, workspace_id, api_key_id, model, context_window, requests, input_tokens,
         output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
         cache_read_input_tokens, cost_nanos)
    VALUES (
        NEW.org_id,
        NEW.ended_at - NEW.ended_at % 3600000,
        NEW.workspace_id,
        COALESCE(NEW.api_key_id, ''),
        NEW.model,
        CASE WHEN NEW.input_tokens + NEW.cache_creation_5m_input_tokens
                  + NEW.cache_creation_1h_input_tokens + NEW.cache_read_input_tokens > 200000
             THEN '200k-1M' ELSE '0-200k' END,
        1,
        NEW.input_tokens,
        NEW.output_tokens,
        NEW.cache_creation_5m_input_tokens,
        NEW.cache_creation_1h_input_tokens,
        NEW.cache_read_input_tokens,
        COALESCE((SELECT charged FROM reservations WHERE id = NEW.reservation_id), 0)
    )
    ON CONFLICT (org_id, hour, workspace_id, api_key_id, model, context_window) DO UPDATE SET
        requests = requests + 1,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_creation_5m_input_tokens = cache_creation_5m_input_tokens + excluded.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens = cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens + excluded.cache_read_input_tokens,
        cost_nanos = cost_nanos + excluded.cost_nanos;
END;

-- The rollup of the usage recorded before this migration; a one-off backfill, checked like
-- the rest by `usage_rollup_problems`.
INSERT INTO usage_hourly
    (org_id, hour, workspace_id, api_key_id, model, context_window, requests, input_tokens,
     output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
     cache_read_input_tokens, cost_nanos)
SELECT u.org_id,
       u.ended_at - u.ended_at % 3600000 AS hour,
       u.workspace_id,
       COALESCE(u.api_key_id, '') AS key_id,
       u.model,
       CASE WHEN u.input_tokens + u.cache_creation_5m_input_tokens + u.cache_creation_1h_input_tokens
                 + u.cache_read_input_tokens > 200000
            THEN '200k-1M' ELSE '0-200k' END AS window,
       COUNT(*),
       SUM(u.input_tokens),
       SUM(u.output_tokens),
       SUM(u.cache_creation_5m_input_tokens),
       SUM(u.cache_creation_1h_input_tokens),
       SUM(u.cache_read_input_tokens),
       SUM(COALESCE(r.charged, 0))
FROM usage_records u LEFT JOIN reservations r ON r.id = u.reservation_id
WHERE u.status IN ('succeeded', 'client_disconnected')
GROUP BY u.org_id, hour, u.workspace_id, key_id, u.model, window;
