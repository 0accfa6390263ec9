-- The Console's setup link: at most one at a time, for every replica of the database.
--
-- 0004 kept every minted setup token, each valid for a day even after an admin existed, so
-- every start of every replica added one more way to become an admin. Those tokens are
-- all dropped here. A link lives in the single row of `console_setup_link`: minting a new
-- one replaces the old one, using it deletes it, and setting any password deletes it too.

DROP TABLE console_setup_tokens;

CREATE TABLE console_setup_link (
    slot       INTEGER PRIMARY KEY CHECK (slot = 1),
    token_hash TEXT    NOT NULL,
    org_id     TEXT    NOT NULL REFERENCES organizations (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL CHECK (expires_at > created_at)
);
