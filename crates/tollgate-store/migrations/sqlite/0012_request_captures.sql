-- Request and response bodies captured per workspace (issue #17), off by default. A
-- workspace captures while it has a row in capture_settings; each captured request has one
-- row in request_captures, keyed by its request id and scoped to its organization and
-- workspace. Bodies are written already redacted and cut to the workspace's size cap;
-- `*_bytes` is the size as received or delivered and `*_truncated` (0 or 1) marks a cut.
-- The maintenance loop deletes captures whose `expires_at` has passed; changing the
-- retention moves the expiry of the captures already kept.
CREATE TABLE capture_settings (
    workspace_id   TEXT    PRIMARY KEY,
    org_id         TEXT    NOT NULL,
    retention_days INTEGER NOT NULL CHECK (retention_days > 0),
    body_bytes_max INTEGER NOT NULL CHECK (body_bytes_max > 0),
    redact_paths   TEXT    NOT NULL,
    updated_at     INTEGER NOT NULL,
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);

CREATE TABLE request_captures (
    org_id         TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    workspace_id   TEXT    NOT NULL,
    captured_at    INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    request_body   TEXT    NOT NULL,
    request_bytes  INTEGER NOT NULL,
    request_truncated INTEGER NOT NULL CHECK (request_truncated IN (0, 1)),
    response_kind  TEXT    NOT NULL CHECK (response_kind IN ('json', 'event_stream')),
    response_body  TEXT    NOT NULL,
    response_bytes INTEGER NOT NULL,
    response_truncated INTEGER NOT NULL CHECK (response_truncated IN (0, 1)),
    PRIMARY KEY (org_id, request_id),
    FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id)
);
CREATE INDEX request_captures_by_expiry ON request_captures (expires_at);
CREATE INDEX request_captures_by_workspace ON request_captures (workspace_id, captured_at);
