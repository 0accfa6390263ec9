-- Claude Code's /login against the gateway (issue #19): the OAuth device authorization
-- grant. A grant is found by the SHA-256 of its device code (the client's secret) or by its
-- short user code (typed in the browser); a signed-in person approves it for one of their
-- workspaces, and the first poll after that issues it once. Refresh tokens are kept as
-- SHA-256 too, each used once (the next one replaces it); they go with their user.
CREATE TABLE device_grants (
    device_code_hash TEXT    PRIMARY KEY,
    user_code        TEXT    NOT NULL UNIQUE,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'issued')),
    user_id          TEXT    REFERENCES users (id) ON DELETE CASCADE,
    workspace_id     TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    last_polled_at   INTEGER
);
CREATE INDEX device_grants_by_expiry ON device_grants (expires_at);

CREATE TABLE device_refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    key_id     TEXT    NOT NULL,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
