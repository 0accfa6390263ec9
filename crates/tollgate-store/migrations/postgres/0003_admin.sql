-- The Admin API: who created each key, users, invites, workspace members, and the hourly
-- usage rollup the reports read. The same tables as migrations/sqlite/0003_admin.sql,
-- which also says why the rollup is kept by a trigger. Nothing to backfill (see 0002).

ALTER TABLE api_keys ADD COLUMN created_by_type TEXT NOT NULL DEFAULT 'system'
    CHECK (created_by_type IN ('user', 'admin_key', 'system'));
ALTER TABLE api_keys ADD COLUMN created_by_id TEXT NOT NULL DEFAULT 'system';

CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id) WHERE workspace_id IS NOT NULL;

CREATE TABLE users (
    id       TEXT    PRIMARY KEY,
    org_id   TEXT    NOT NULL REFERENCES organizations (id),
    email    TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    role     TEXT    NOT NULL CHECK (role IN ('user', 'developer', 'billing', 'admin', 'claude_code_user')),
    added_at BIGINT  NOT NULL,
    UNIQUE (org_id, email),
    UNIQUE (id, org_id)
);

CREATE TABLE invites (
    id         TEXT    PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations (id),
    email      TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('user', 'developer', 'billing', 'claude_code_user')),
    status     TEXT    NOT NULL CHECK (status IN ('pending', 'accepted')),
    invited_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL CHECK (expires_at > invited_at)
);

CREATE INDEX invites_by_org ON invites (org_id, invited_at);

CREATE TABLE workspace_members (
    workspace_id   TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    org_id         TEXT    NOT NULL,
    workspace_role TEXT    NOT NULL CHECK (workspace_role IN
                       ('workspace_user', 'workspace_developer', 'workspace_admin', 'workspace_billing')),
    added_at       BIGINT  NOT NULL,
    PRIMARY KEY (workspace_id, user_id),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id),
    FOREIGN KEY (user_id, org_id) REFERENCES users (id, org_id) ON DELETE CASCADE
);

CREATE INDEX workspace_members_by_user ON workspace_members (user_id);

CREATE TABLE usage_hourly (
    org_id                         TEXT    NOT NULL REFERENCES organizations (id),
    hour                           BIGINT  NOT NULL CHECK (hour % 3600000 = 0),
    workspace_id                   TEXT    NOT NULL,
    api_key_id                     TEXT    NOT NULL,
    model                          TEXT    NOT NULL,
    context_window                 TEXT    NOT NULL CHECK (context_window IN ('0-200k', '200k-1M')),
    requests                       BIGINT  NOT NULL CHECK (requests >= 0),
    input_tokens                   BIGINT  NOT NULL CHECK (input_tokens >= 0),
    output_tokens                  BIGINT  NOT NULL CHECK (output_tokens >= 0),
    cache_creation_5m_input_tokens BIGINT  NOT NULL CHECK (cache_creation_5m_input_tokens >= 0),
    cache_creation_1h_input_tokens BIGINT  NOT NULL CHECK (cache_creation_1h_input_tokens >= 0),
    cache_read_input_tokens        BIGINT  NOT NULL CHECK (cache_read_input_tokens >= 0),
    cost_nanos                     BIGINT  NOT NULL CHECK (cost_nanos >= 0),
    PRIMARY KEY (org_id, hour, workspace_id, api_key_id, model, context_window)
);

CREATE FUNCTION usage_records_roll_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_hourly AS h
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
        requests = h.requests + 1,
        input_tokens = h.input_tokens + excluded.input_tokens,
        output_tokens = h.output_tokens + excluded.output_tokens,
        cache_creation_5m_input_tokens = h.cache_creation_5m_input_tokens + excluded.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens = h.cache_creation_1h_input_tokens + excluded.cache_creation_1h_input_tokens,
        cache_read_input_tokens = h.cache_read_input_tokens + excluded.cache_read_input_tokens,
        cost_nanos = h.cost_nanos + excluded.cost_nanos;
    RETURN NULL;
END;
$$;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
    FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'client_disconnected'))
    EXECUTE FUNCTION usage_records_roll_up();
