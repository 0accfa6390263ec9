-- The Files API (issue #20): files uploaded by a workspace's keys, their bytes kept by the
-- gateway outside the database (the `[files]` directory), one row each here. `seq` orders a
-- workspace's list (newest first) whatever the clock did; `expires_at` is NULL for a
-- file that does not expire. No money lives here.
CREATE TABLE files (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    org_id       TEXT    NOT NULL REFERENCES organizations (id),
    workspace_id TEXT    NOT NULL,
    api_key_id   TEXT    NOT NULL,
    filename     TEXT    NOT NULL,
    mime_type    TEXT    NOT NULL,
    size_bytes   INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);
CREATE INDEX files_by_workspace ON files (workspace_id, seq);
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

-- What each organization stores, in bytes: raised by an upload only while it stays within
-- the quota (one conditional UPDATE, so concurrent uploads cannot pass it together),
-- lowered by each deletion, in the transaction that inserts or deletes the file's row.
CREATE TABLE file_storage (
    org_id     TEXT   PRIMARY KEY REFERENCES organizations (id),
    used_bytes INTEGER NOT NULL CHECK (used_bytes >= 0)
);

-- A file as a provider knows it: uploaded to an `anthropic` provider at its first use
-- there, then named by the provider's id in every request to it.
CREATE TABLE provider_files (
    file_id          TEXT   NOT NULL REFERENCES files (id),
    provider         TEXT   NOT NULL,
    provider_file_id TEXT   NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (file_id, provider)
);
