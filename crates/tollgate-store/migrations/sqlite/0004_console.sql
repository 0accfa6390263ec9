-- The Console: people sign in with an email and a password, and get a session.
--
-- Same conventions as 0001: timestamps are INTEGER unix milliseconds (UTC). No secret is
-- stored as given: passwords as argon2id PHC strings, session and setup tokens as the hex
-- SHA-256 of the token, so a copy of the database signs nobody in.

-- A user's password; a user without a row here cannot sign in.
CREATE TABLE user_credentials (
    user_id       TEXT    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- A signed-in browser. `csrf_token` goes into every form of the session's pages.
CREATE TABLE console_sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL CHECK (expires_at > created_at)
);

CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

-- One-time links that let the first admin of an organization choose a password.
CREATE TABLE console_setup_tokens (
    token_hash TEXT    PRIMARY KEY,
    org_id     TEXT    NOT NULL REFERENCES organizations (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
    used_at    INTEGER
);

-- Failed sign-ins per bucket ('email:…' or 'ip:…') in a fixed window, shared by every
-- replica of the database.
CREATE TABLE console_sign_in_failures (
    bucket       TEXT    PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL CHECK (failures >= 0)
);

-- The Workbench reads back the usage record of the request it just ran.
CREATE INDEX usage_records_by_request ON usage_records (org_id, request_id);
