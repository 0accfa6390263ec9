-- Single sign-on for the Console (issue #19): a sign-in attempt sent to the identity
-- provider, found again by the SHA-256 of its `state` when the browser comes back, and
-- deleted as it is used (one use) or once it expires. The nonce and the PKCE verifier are
-- secrets of this attempt only, and never leave the server but to the provider.
CREATE TABLE console_sso_attempts (
    state_hash    TEXT    PRIMARY KEY,
    nonce         TEXT    NOT NULL,
    pkce_verifier TEXT    NOT NULL,
    redirect_uri  TEXT    NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX console_sso_attempts_by_expiry ON console_sso_attempts (expires_at);
