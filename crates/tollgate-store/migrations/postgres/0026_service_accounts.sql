-- Service accounts (issue #19): named non-human callers of an organization, with an
-- organization role of their own and a role in each workspace they belong to.
--
-- Archiving an account (`archived_at`) is final: its keys are archived in the same
-- transaction and it can neither be changed nor given keys again; it stays for the
-- history its keys and usage name. Removing it from a workspace archives its keys there.
-- `api_keys.service_account_id`: the account a key is bound to; NULL for other keys. No
-- foreign key, as for `user_id`: the key keeps naming its account for the history.
CREATE TABLE service_accounts (
    id          TEXT    PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES organizations (id),
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    archived_at BIGINT,
    UNIQUE (org_id, name)
);

CREATE TABLE service_account_workspaces (
    service_account_id TEXT    NOT NULL REFERENCES service_accounts (id),
    workspace_id       TEXT    NOT NULL REFERENCES workspaces (id),
    workspace_role     TEXT    NOT NULL CHECK (workspace_role IN
                           ('workspace_user', 'workspace_developer', 'workspace_admin', 'workspace_billing')),
    added_at           BIGINT NOT NULL,
    PRIMARY KEY (service_account_id, workspace_id)
);
CREATE INDEX service_account_workspaces_by_workspace ON service_account_workspaces (workspace_id);

ALTER TABLE api_keys ADD COLUMN service_account_id TEXT;
CREATE INDEX api_keys_by_service_account ON api_keys (service_account_id)
    WHERE service_account_id IS NOT NULL;
