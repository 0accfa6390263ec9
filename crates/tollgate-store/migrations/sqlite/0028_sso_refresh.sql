-- Group re-checks at the identity provider (issue #19): the refresh token a person's last
-- single sign-on returned (asked for with `offline_access`), kept so the service can ask the
-- provider again, every `recheck_minutes`, which groups the person is in. The token is a
-- secret only the provider's token endpoint is ever sent; `subject` is the person's `sub`
-- there, which a refreshed ID token must repeat. A row per person; none: not re-checked.
CREATE TABLE sso_refresh_tokens (
    user_id       TEXT    PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    subject       TEXT    NOT NULL,
    refresh_token TEXT    NOT NULL,
    checked_at    INTEGER NOT NULL
);
CREATE INDEX sso_refresh_tokens_by_check ON sso_refresh_tokens (checked_at);
